//! Every SQL statement pinlock runs, in one place. All of them take their
//! values as parameters; nothing is ever formatted into SQL text.

/// Migration lock: the two-int4 advisory key space, which never overlaps the
/// bigint space that entity keys use. 0x70696e6c is "pinl".
pub const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(1885957740, 0)";

/// Schema migrations, applied in order, each once.
pub const MIGRATIONS: &[&str] = &[
    // 1: entity keys, fencing tokens, key-value state.
    "CREATE TABLE pinlock.entity_keys (
         entity uuid PRIMARY KEY,
         key bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
         created_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE SEQUENCE pinlock.fence;
     CREATE TABLE pinlock.kv (
         bucket text NOT NULL,
         key text NOT NULL,
         value bytea NOT NULL,
         updated_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (bucket, key)
     );",
    // 2: new entity keys start at 2^48, clear of the small integers other
    // applications pass to pg_advisory_lock. Keys already handed out stay
    // (hosts cache them and may hold locks on them).
    "ALTER TABLE pinlock.entity_keys ALTER COLUMN key SET START WITH 281474976710656;
     SELECT setval(pg_get_serial_sequence('pinlock.entity_keys', 'key'),
                   greatest(281474976710656, (SELECT coalesce(max(key) + 1, 0) FROM pinlock.entity_keys)),
                   false);",
    // 3: the job queue `pinlock serve` hosts share.
    include_str!("../queue/schema.sql"),
    // 4: what every serving host's jobs hold and wait for (the dashboard).
    include_str!("../server/dashboard/schema.sql"),
];

pub const CREATE_SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS pinlock;
     CREATE TABLE IF NOT EXISTS pinlock.schema_version (version int NOT NULL)";
pub const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM pinlock.schema_version";
pub const RECORD_VERSION: &str = "INSERT INTO pinlock.schema_version (version) VALUES ($1)";

/// Entity → key, for an entity some host has mapped before (a read: no WAL,
/// no commit flush).
pub const FIND_KEY: &str = "SELECT key FROM pinlock.entity_keys WHERE entity = $1";

/// Entity → key, inserting the mapping if it is new. `DO UPDATE` (not
/// `DO NOTHING`) so that the row comes back even when another host inserted
/// it concurrently.
pub const UPSERT_KEY: &str = "INSERT INTO pinlock.entity_keys (entity) VALUES ($1)
     ON CONFLICT (entity) DO UPDATE SET entity = EXCLUDED.entity RETURNING key";

// Lock statements. The fencing token is read from the sequence after the
// grant (OFFSET 0 keeps the planner from merging the two levels, and CASE
// evaluates its branch only after its condition), so a token is always
// greater than any token read by an earlier holder.
/// Waits for an exclusive lock, then reads its fencing token.
pub const LOCK_EXCLUSIVE: &str =
    "SELECT nextval('pinlock.fence') FROM (SELECT pg_advisory_lock($1) OFFSET 0) AS granted";
pub const LOCK_SHARED: &str =
    "SELECT nextval('pinlock.fence') FROM (SELECT pg_advisory_lock_shared($1) OFFSET 0) AS granted";
pub const TRY_EXCLUSIVE: &str = "SELECT CASE WHEN pg_try_advisory_lock($1) THEN nextval('pinlock.fence') END";
pub const TRY_SHARED: &str = "SELECT CASE WHEN pg_try_advisory_lock_shared($1) THEN nextval('pinlock.fence') END";
pub const NEXT_FENCE: &str = "SELECT nextval('pinlock.fence')";
// The same for a job whose worker never reads a fencing token (it does not
// import `fencing-token`): no `nextval`, so no sequence write and none of its
// WAL flushes; 0 stands where the token would be.
pub const LOCK_EXCLUSIVE_UNFENCED: &str = "SELECT 0::int8 FROM (SELECT pg_advisory_lock($1) OFFSET 0) AS granted";
pub const LOCK_SHARED_UNFENCED: &str = "SELECT 0::int8 FROM (SELECT pg_advisory_lock_shared($1) OFFSET 0) AS granted";
pub const TRY_EXCLUSIVE_UNFENCED: &str = "SELECT CASE WHEN pg_try_advisory_lock($1) THEN 0::int8 END";
pub const TRY_SHARED_UNFENCED: &str = "SELECT CASE WHEN pg_try_advisory_lock_shared($1) THEN 0::int8 END";
pub const UNLOCK_EXCLUSIVE: &str = "SELECT pg_advisory_unlock($1)";
pub const UNLOCK_SHARED: &str = "SELECT pg_advisory_unlock_shared($1)";
pub const UNLOCK_ALL: &str = "SELECT pg_advisory_unlock_all()";
/// Run once per session: its backend pid, and the settings it pins
/// (`$1` names, `$2` values; see `liveness.rs`), set only where the server
/// has them. Returns the names it lacks.
pub const SESSION_SETUP: &str = "SELECT pg_backend_pid(),
            coalesce(array_agg(s.name) FILTER (WHERE p.name IS NULL), '{}')::text[],
            count(CASE WHEN p.name IS NOT NULL THEN set_config(s.name, s.value, false) END)
       FROM unnest($1::text[], $2::text[]) AS s(name, value)
       LEFT JOIN pg_settings p ON p.name = s.name";
/// Ends a backend that is stuck (a wait that could not be cancelled) and
/// waits up to 5 s for it to exit, which frees its locks.
pub const TERMINATE: &str = "SELECT pg_terminate_backend($1, 5000)";
/// Whether this session holds the bigint advisory lock `$1` in mode `$2`
/// ('ExclusiveLock' or 'ShareLock'). Used after a cancelled wait, whose
/// outcome the error alone does not tell.
pub const HOLDS: &str = "SELECT EXISTS (
         SELECT 1 FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
           AND objsubid = 1 AND classid = (($1::int8 >> 32) & 4294967295)::oid
           AND objid = ($1::int8 & 4294967295)::oid
           AND mode = $2)";

pub const KV_GET: &str = "SELECT value FROM pinlock.kv WHERE bucket = $1 AND key = $2";
pub const KV_SET: &str = "INSERT INTO pinlock.kv (bucket, key, value) VALUES ($1, $2, $3)
     ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";
pub const KV_DELETE: &str = "DELETE FROM pinlock.kv WHERE bucket = $1 AND key = $2";
pub const KV_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pinlock.kv WHERE bucket = $1 AND key = $2)";
/// Adds `$3` to the decimal integer under the key (a missing key counts as
/// 0) and returns the sum. A value that is not such an integer, or an
/// overflow, raises a data exception (SQLSTATE class 22) and changes nothing.
pub const KV_INCREMENT: &str = "INSERT INTO pinlock.kv (bucket, key, value)
     VALUES ($1, $2, convert_to($3::int8::text, 'UTF8'))
     ON CONFLICT (bucket, key) DO UPDATE
        SET value = convert_to((convert_from(pinlock.kv.value, 'UTF8')::int8 + $3::int8)::text, 'UTF8'),
            updated_at = now()
     RETURNING convert_from(value, 'UTF8')::int8";
/// Compare-and-swap when the key is expected to have no value: inserts, or
/// touches nothing (0 rows) when a value is there.
pub const KV_INSERT_NEW: &str = "INSERT INTO pinlock.kv (bucket, key, value) VALUES ($1, $2, $3)
     ON CONFLICT (bucket, key) DO NOTHING";
/// Compare-and-swap: replaces the value only if it is `$3` now (1 row), else
/// touches nothing. Under READ COMMITTED an UPDATE that waited for a
/// concurrent writer re-checks its WHERE on the row that writer left.
pub const KV_SWAP: &str = "UPDATE pinlock.kv SET value = $4, updated_at = now()
     WHERE bucket = $1 AND key = $2 AND value = $3";
/// The values under the keys `$2` as one array, in the order given (NULL
/// for a missing key).
pub const KV_GET_MANY: &str = "SELECT coalesce(array_agg(kv.value ORDER BY wanted.n), '{}')
       FROM unnest($2::text[]) WITH ORDINALITY AS wanted(key, n)
       LEFT JOIN pinlock.kv kv ON kv.bucket = $1 AND kv.key = wanted.key";
/// Stores the pairs `($2[i], $3[i])` in one statement (so all or none). The
/// keys must be distinct: an upsert cannot touch one row twice.
pub const KV_SET_MANY: &str = "INSERT INTO pinlock.kv (bucket, key, value)
     SELECT $1, pair.key, pair.value FROM unnest($2::text[], $3::bytea[]) AS pair(key, value)
     ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()";
pub const KV_DELETE_MANY: &str = "DELETE FROM pinlock.kv WHERE bucket = $1 AND key = ANY($2::text[])";
/// Up to `$3` keys of a bucket after `$2` ('' for the first page: every key
/// is non-empty) as one array, in the order of the primary key's index.
pub const KV_LIST_KEYS: &str = "SELECT coalesce(array_agg(key ORDER BY key), '{}') FROM (
         SELECT key FROM pinlock.kv WHERE bucket = $1 AND key > $2 ORDER BY key LIMIT $3
     ) AS page";

/// Every advisory lock in this database, held or awaited, with its entity
/// when the key is one of ours and the holder's identity.
pub const LIST_LOCKS: &str = "SELECT l.pid, coalesce(a.application_name, ''), l.mode, l.granted,
            (l.classid::int8 << 32) | l.objid::int8 AS key, l.objsubid::int4,
            k.entity, a.client_addr::text,
            extract(epoch FROM now() - coalesce(a.state_change, now()))::float8
       FROM pg_locks l
       LEFT JOIN pg_stat_activity a ON a.pid = l.pid
       LEFT JOIN pinlock.entity_keys k
              ON l.objsubid = 1 AND k.key = (l.classid::int8 << 32) | l.objid::int8
      WHERE l.locktype = 'advisory'
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY key, l.granted DESC, l.pid";
