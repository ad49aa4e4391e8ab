//! The queue's statements (its schema is `schema.sql`, migration 3). All
//! values are parameters. `$1` is always the host's id where one is needed.

pub const REGISTER_WORKERS: &str = "INSERT INTO pinlock.workers (name) SELECT unnest($1::text[])
     ON CONFLICT (name) DO UPDATE SET seen_at = now()";

/// Enqueues a batch: workers, inputs, run_at (text, NULL = now), max
/// attempts, unique keys; returns (id, duplicate) in order.
pub const ENQUEUE: &str = "SELECT e.id, e.duplicate
       FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::int[], $5::text[])
            WITH ORDINALITY AS a(worker, input, run_at, max_attempts, unique_key, n)
      CROSS JOIN LATERAL pinlock.enqueue(a.worker, a.input, coalesce(a.run_at::timestamptz, now()),
                                         a.max_attempts, a.unique_key) e
      ORDER BY a.n";

/// Claims up to `$3[i]` due jobs of worker `$2[i]`, at most `$4` in all,
/// leased for `$5` seconds.
pub const CLAIM: &str = "WITH picked AS (
         SELECT j.id FROM unnest($2::text[], $3::int[]) AS w(worker, n)
         CROSS JOIN LATERAL (
             SELECT id, run_at FROM pinlock.jobs
              WHERE state = 'queued' AND worker = w.worker AND run_at <= now()
              ORDER BY run_at, id LIMIT w.n
              FOR UPDATE SKIP LOCKED) j
         ORDER BY j.run_at, j.id LIMIT $4::int)
     UPDATE pinlock.jobs j
        SET state = 'running', attempt = attempt + 1, host = $1,
            started_at = now(), lease_expires_at = now() + make_interval(secs => $5)
       FROM picked WHERE j.id = picked.id
     RETURNING j.id, j.worker, j.input, j.attempt";

/// Inserts a job already running on this host (a synchronous run).
pub const INSERT_RUNNING: &str = "INSERT INTO pinlock.jobs
         (worker, input, state, attempt, max_attempts, host, started_at, lease_expires_at)
     SELECT $2, $3::jsonb, 'running', 1, 1, $1, now(), now() + make_interval(secs => $4)
      WHERE EXISTS (SELECT 1 FROM pinlock.workers WHERE name = $2)
     RETURNING id";

/// Finishes a batch: ids, attempts, outcomes (succeeded | error |
/// cancelled | released), outputs, errors. A job whose (host, attempt) no
/// longer matches was rescued meanwhile: left alone.
pub const FINISH: &str = "WITH r AS (SELECT * FROM unnest($2::int8[], $3::int4[], $4::text[], $5::bytea[], $6::text[])
                      AS r(id, attempt, outcome, output, error)),
     upd AS (
     UPDATE pinlock.jobs j SET
         state = CASE
             WHEN r.outcome = 'succeeded' THEN 'succeeded'
             WHEN j.cancel_requested_at IS NOT NULL OR r.outcome = 'cancelled' THEN 'cancelled'
             WHEN r.outcome = 'released' OR j.attempt < j.max_attempts THEN 'queued'
             ELSE 'failed' END,
         finished_at = CASE
             WHEN r.outcome IN ('succeeded', 'cancelled') OR j.cancel_requested_at IS NOT NULL
               OR (r.outcome = 'error' AND j.attempt >= j.max_attempts) THEN now() END,
         run_at = CASE
             WHEN r.outcome = 'error'
             THEN now() + least(interval '1 hour', interval '1 second' * 2 ^ (j.attempt - 1)) * (0.75 + 0.5 * random())
             ELSE now() END,
         attempt = j.attempt - (r.outcome = 'released')::int,
         output = r.output, error = r.error, lease_expires_at = NULL
       FROM r
      WHERE j.id = r.id AND j.attempt = r.attempt AND j.host = $1 AND j.state = 'running'
     RETURNING j.id, j.worker, j.state, j.run_at)
     SELECT id, state, CASE WHEN state = 'queued' AND run_at <= now()
                            THEN pg_notify('pinlock_jobs', 'queued ' || worker) END IS NULL
       FROM upd";

/// Renews the leases of this host's running jobs `$2` by `$3` seconds;
/// returns each renewed id and whether a cancel was requested.
pub const RENEW: &str = "UPDATE pinlock.jobs SET lease_expires_at = now() + make_interval(secs => $3)
      WHERE host = $1 AND state = 'running' AND id = ANY($2::int8[])
     RETURNING id, cancel_requested_at IS NOT NULL";

/// Requeues (or fails, or cancels) up to `$1` running jobs whose lease expired.
pub const RESCUE: &str = "WITH stale AS (
         SELECT id FROM pinlock.jobs WHERE state = 'running' AND lease_expires_at < now()
          ORDER BY lease_expires_at LIMIT $1::int FOR UPDATE SKIP LOCKED),
     upd AS (
     UPDATE pinlock.jobs j SET
         state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN attempt >= max_attempts THEN 'failed' ELSE 'queued' END,
         finished_at = CASE WHEN cancel_requested_at IS NOT NULL OR attempt >= max_attempts THEN now() END,
         error = 'lease expired on host ' || host, run_at = now(), lease_expires_at = NULL
       FROM stale WHERE j.id = stale.id
     RETURNING j.id, j.worker, j.state)
     SELECT id, CASE WHEN state = 'queued' THEN pg_notify('pinlock_jobs', 'queued ' || worker) END IS NULL
       FROM upd";

/// Deletes up to `$2` jobs finished more than `$1` seconds ago.
pub const PRUNE: &str = "DELETE FROM pinlock.jobs WHERE id IN (
         SELECT id FROM pinlock.jobs WHERE finished_at < now() - make_interval(secs => $1)
          ORDER BY finished_at LIMIT $2::int FOR UPDATE SKIP LOCKED)";

pub const CANCEL: &str = "SELECT pinlock.cancel($1)";

/// The columns a job is shown with.
const JOB_COLUMNS: &str = "id, worker, state, input, attempt, max_attempts, unique_key, host, output, error,
            to_json(created_at), to_json(run_at), to_json(started_at), to_json(finished_at)";

pub fn get_job() -> String {
    format!("SELECT {JOB_COLUMNS} FROM pinlock.jobs WHERE id = $1")
}

/// Newest first, optionally by worker (`$1`) and state (`$2`), below id `$3`.
pub fn list_jobs() -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM pinlock.jobs
          WHERE ($1::text IS NULL OR worker = $1) AND ($2::text IS NULL OR state = $2)
            AND ($3::int8 IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4::int8"
    )
}

/// Queued jobs that are due, per worker: how many and the oldest's age.
pub const DEPTH: &str = "SELECT worker, count(*), extract(epoch FROM now() - min(run_at))::float8
       FROM pinlock.jobs WHERE state = 'queued' AND run_at <= now() GROUP BY worker";

/// The next time a queued job of these workers becomes due.
pub const NEXT_DUE: &str = "SELECT extract(epoch FROM min(run_at) - now())::float8 FROM pinlock.jobs WHERE state = 'queued' AND worker = ANY($1)";

pub const LISTEN: &str = "LISTEN pinlock_jobs";

/// The schema version this host needs, to tell readiness.
pub const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM pinlock.schema_version";
