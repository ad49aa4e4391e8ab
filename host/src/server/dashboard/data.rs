//! The dashboard's reads: every live host's holds and waits (from
//! `pinlock.lock_activity`, see [`super::publish`]), grouped per entity with
//! the waiters in the order they started waiting; the queue by worker; and
//! the lists of running, queued and recently failed jobs. Values are
//! parameters; the search is applied in memory.

use std::collections::BTreeMap;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::db::{DbError, SharedClient};

/// A host whose heartbeat is older than this is left out: it stopped
/// publishing (it died, or cannot reach the database).
pub(crate) const STALE_AFTER_SECS: f64 = 5.0;
/// "Recently" in the jobs panel: finished within this.
pub(crate) const RECENT_SECS: f64 = 3600.0;
/// Most rows in each job list.
const LIST_LIMIT: i64 = 25;

/// Every live host's rows, oldest first within an entity's holders and
/// waiters. `$1`: staleness bound; `$2`: one job only (or NULL).
const LOCKS_NOW: &str = "SELECT a.host, a.job_id, a.worker, a.entity, a.key, a.mode, a.state,
            extract(epoch FROM now() - a.since)::float8
       FROM pinlock.lock_activity a JOIN pinlock.lock_hosts h ON h.host = a.host
      WHERE h.heartbeat > now() - make_interval(secs => $1) AND ($2::int8 IS NULL OR a.job_id = $2)
      ORDER BY a.entity, a.state, a.since, a.host, a.job_id";

/// Every host that published, with the age of its heartbeat.
const HOSTS: &str = "SELECT host, extract(epoch FROM now() - heartbeat)::float8 FROM pinlock.lock_hosts ORDER BY host";

/// Jobs per worker and state: queued (due or not), running, and finished
/// within `$1` seconds. Three index-backed parts rather than one OR.
const COUNTS: &str = "SELECT w.name,
            count(*) FILTER (WHERE j.state = 'queued' AND j.run_at <= now()),
            count(*) FILTER (WHERE j.state = 'queued' AND j.run_at > now()),
            count(*) FILTER (WHERE j.state = 'running'),
            count(*) FILTER (WHERE j.state = 'succeeded'),
            count(*) FILTER (WHERE j.state = 'failed'),
            count(*) FILTER (WHERE j.state = 'cancelled')
       FROM pinlock.workers w LEFT JOIN (
            SELECT worker, state, run_at FROM pinlock.jobs WHERE state = 'queued'
            UNION ALL SELECT worker, state, run_at FROM pinlock.jobs WHERE state = 'running'
            UNION ALL SELECT worker, state, run_at FROM pinlock.jobs
                       WHERE finished_at > now() - make_interval(secs => $1)) j ON j.worker = w.name
      GROUP BY w.name ORDER BY w.name";

/// The columns of a job in a list; the age is since it became due (queued:
/// negative when due later), started (running) or finished.
const JOB_ROW: &str =
    "SELECT id, worker, state, attempt, max_attempts, host, octet_length(input::text), left(error, 300),
            extract(epoch FROM now() - CASE state WHEN 'queued' THEN run_at
                                                  ELSE coalesce(finished_at, started_at, run_at) END)::float8
       FROM pinlock.jobs";

/// One entity held or awaited by a job of a live host.
#[derive(Debug, Clone)]
pub(crate) struct LockRow {
    pub(crate) host: String,
    pub(crate) job: i64,
    pub(crate) worker: String,
    pub(crate) entity: Uuid,
    pub(crate) mode: String,
    pub(crate) state: String,
    /// Seconds held or waited so far.
    pub(crate) age_secs: f64,
}

/// One entity: who holds it and who waits, first waiter first.
#[derive(Debug, Clone)]
pub(crate) struct EntityLocks {
    pub(crate) entity: Uuid,
    pub(crate) key: i64,
    pub(crate) holders: Vec<LockRow>,
    pub(crate) waiters: Vec<LockRow>,
}

/// A host that published, and how long ago.
#[derive(Debug, Clone)]
pub(crate) struct HostBeat {
    pub(crate) host: String,
    pub(crate) age_secs: f64,
}

impl HostBeat {
    pub(crate) fn stale(&self) -> bool {
        self.age_secs > STALE_AFTER_SECS
    }
}

/// "Locks now".
#[derive(Debug, Clone, Default)]
pub(crate) struct LocksNow {
    pub(crate) entities: Vec<EntityLocks>,
    pub(crate) hosts: Vec<HostBeat>,
}

/// What the search box asks for: an entity (by UUID, part of one, or the
/// name a guest gave `Entity::named`), a worker, a host or a job id.
pub(crate) struct Search {
    /// As typed (trimmed): a name is case-sensitive.
    text: String,
    lowercase: String,
    /// The entity `Entity::named(text)` gives.
    named: Uuid,
}

/// `Entity::named`'s namespace (guest-sdk/src/entity.rs): UUIDv5 of
/// `urn:pinlock:entity` in the URL namespace.
const ENTITY_NAMESPACE: Uuid = Uuid::from_u128(0x593f8505_bf80_559e_bbe4_abb9a734db20);

impl Search {
    /// `None` for an empty search.
    pub(crate) fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self {
            text: text.to_owned(),
            lowercase: text.to_lowercase(),
            named: Uuid::new_v5(&ENTITY_NAMESPACE, text.as_bytes()),
        })
    }

    /// The entity named by the search text, if `Entity::named(text)` is it.
    pub(crate) fn name_of(&self, entity: Uuid) -> Option<&str> {
        (entity == self.named).then_some(self.text.as_str())
    }

    fn matches(&self, row: &LockRow) -> bool {
        let text = &self.lowercase;
        row.entity == self.named
            || row.entity.to_string().contains(text)
            || row.worker.to_lowercase().contains(text)
            || row.host.to_lowercase().contains(text)
            || row.job.to_string() == *text
    }
}

/// Groups rows (ordered by entity, state, since) per entity. With a search,
/// keeps the entities any of whose rows match, with their whole queue.
fn group(rows: Vec<(LockRow, i64)>, search: Option<&Search>) -> Vec<EntityLocks> {
    let mut entities: BTreeMap<Uuid, EntityLocks> = BTreeMap::new();
    for (row, key) in rows {
        let entity = entities.entry(row.entity).or_insert_with(|| EntityLocks {
            entity: row.entity,
            key,
            holders: vec![],
            waiters: vec![],
        });
        if row.state == "held" { entity.holders.push(row) } else { entity.waiters.push(row) }
    }
    let mut entities: Vec<EntityLocks> = entities
        .into_values()
        .filter(|e| search.is_none_or(|s| e.holders.iter().chain(&e.waiters).any(|r| s.matches(r))))
        .collect();
    // Longest waits first: that is what someone on call looks for.
    let longest = |e: &EntityLocks| e.waiters.first().or(e.holders.first()).map_or(0.0, |r| r.age_secs);
    entities.sort_by(|a, b| longest(b).total_cmp(&longest(a)));
    entities
}

fn lock_row(row: &Row) -> Result<(LockRow, i64), tokio_postgres::Error> {
    Ok((
        LockRow {
            host: row.try_get(0)?,
            job: row.try_get(1)?,
            worker: row.try_get(2)?,
            entity: row.try_get(3)?,
            mode: row.try_get(5)?,
            state: row.try_get(6)?,
            age_secs: row.try_get(7)?,
        },
        row.try_get(4)?,
    ))
}

fn decode(cause: tokio_postgres::Error) -> DbError {
    DbError::Query { context: "decoding a dashboard row", cause }
}

/// "Locks now", every live host's, filtered by `search`.
pub(crate) async fn locks_now(client: &SharedClient, search: Option<&Search>) -> Result<LocksNow, DbError> {
    let client = client.get().await?;
    let (stale, no_job): (f64, Option<i64>) = (STALE_AFTER_SECS, None);
    let params: [&(dyn ToSql + Sync); 2] = [&stale, &no_job];
    let (rows, hosts) = tokio::try_join!(client.query(LOCKS_NOW, &params), client.query(HOSTS, &[]),)
        .map_err(DbError::query("reading lock activity"))?;
    let rows = rows.iter().map(lock_row).collect::<Result<Vec<_>, _>>().map_err(decode)?;
    let hosts = hosts
        .iter()
        .map(|r| Ok(HostBeat { host: r.try_get(0)?, age_secs: r.try_get(1)? }))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(decode)?;
    Ok(LocksNow { entities: group(rows, search), hosts })
}

/// What job `id` holds and waits for now (on whichever live host runs it).
pub(crate) async fn job_locks(client: &SharedClient, id: i64) -> Result<Vec<LockRow>, DbError> {
    let client = client.get().await?;
    let rows = client
        .query(LOCKS_NOW, &[&STALE_AFTER_SECS, &Some(id)])
        .await
        .map_err(DbError::query("reading a job's locks"))?;
    rows.iter().map(|r| lock_row(r).map(|(row, _)| row)).collect::<Result<_, _>>().map_err(decode)
}

/// One worker's jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerCounts {
    pub(crate) worker: String,
    pub(crate) due: i64,
    pub(crate) scheduled: i64,
    pub(crate) running: i64,
    pub(crate) succeeded: i64,
    pub(crate) failed: i64,
    pub(crate) cancelled: i64,
}

/// One job in a list.
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    pub(crate) id: i64,
    pub(crate) worker: String,
    pub(crate) state: String,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) host: Option<String>,
    pub(crate) input_bytes: i32,
    /// Its (last) error, cut to 300 characters.
    pub(crate) error: Option<String>,
    /// Seconds since it became due (negative: due later), started or finished.
    pub(crate) age_secs: f64,
}

/// The jobs panel.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobsPanel {
    pub(crate) workers: Vec<WorkerCounts>,
    pub(crate) running: Vec<JobRow>,
    pub(crate) queued: Vec<JobRow>,
    pub(crate) failed: Vec<JobRow>,
}

fn job_row(row: &Row) -> Result<JobRow, tokio_postgres::Error> {
    Ok(JobRow {
        id: row.try_get(0)?,
        worker: row.try_get(1)?,
        state: row.try_get(2)?,
        attempt: row.try_get(3)?,
        max_attempts: row.try_get(4)?,
        host: row.try_get(5)?,
        input_bytes: row.try_get(6)?,
        error: row.try_get(7)?,
        age_secs: row.try_get(8)?,
    })
}

/// The queue by worker, and the running, queued and recently failed jobs
/// (of `worker` only, if given).
pub(crate) async fn jobs_panel(client: &SharedClient, worker: Option<&str>) -> Result<JobsPanel, DbError> {
    let client = client.get().await?;
    let running = format!(
        "{JOB_ROW} WHERE state = 'running' AND ($1::text IS NULL OR worker = $1) ORDER BY started_at, id LIMIT $2"
    );
    let queued =
        format!("{JOB_ROW} WHERE state = 'queued' AND ($1::text IS NULL OR worker = $1) ORDER BY run_at, id LIMIT $2");
    let failed = format!(
        "{JOB_ROW} WHERE state = 'failed' AND finished_at > now() - make_interval(secs => $3)
            AND ($1::text IS NULL OR worker = $1) ORDER BY finished_at DESC, id DESC LIMIT $2"
    );
    let (recent, limit) = (RECENT_SECS, LIST_LIMIT);
    let by_worker: [&(dyn ToSql + Sync); 1] = [&recent];
    let listed: [&(dyn ToSql + Sync); 2] = [&worker, &limit];
    let listed_recent: [&(dyn ToSql + Sync); 3] = [&worker, &limit, &recent];
    let (counts, running, queued, failed) = tokio::try_join!(
        client.query(COUNTS, &by_worker),
        client.query(&running, &listed),
        client.query(&queued, &listed),
        client.query(&failed, &listed_recent),
    )
    .map_err(DbError::query("reading the jobs panel"))?;
    let workers = counts
        .iter()
        .map(|r| {
            Ok(WorkerCounts {
                worker: r.try_get(0)?,
                due: r.try_get(1)?,
                scheduled: r.try_get(2)?,
                running: r.try_get(3)?,
                succeeded: r.try_get(4)?,
                failed: r.try_get(5)?,
                cancelled: r.try_get(6)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(decode)?;
    let list = |rows: Vec<Row>| rows.iter().map(job_row).collect::<Result<Vec<_>, _>>().map_err(decode);
    Ok(JobsPanel { workers, running: list(running)?, queued: list(queued)?, failed: list(failed)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(entity: Uuid, job: i64, worker: &str, state: &str, age_secs: f64) -> (LockRow, i64) {
        let row = LockRow {
            host: "host-a".into(),
            job,
            worker: worker.into(),
            entity,
            mode: "exclusive".into(),
            state: state.into(),
            age_secs,
        };
        (row, 42)
    }

    #[test]
    fn rows_group_per_entity_and_the_search_keeps_whole_queues() {
        let named = Uuid::new_v5(&ENTITY_NAMESPACE, b"nightly-report");
        let other = Uuid::new_v4();
        // As the query orders them: entity, then held before waiting, oldest first.
        let mut rows = vec![
            row(named, 1, "report", "held", 9.0),
            row(named, 2, "mailer", "waiting", 5.0),
            row(named, 3, "report", "waiting", 2.0),
            row(other, 4, "inventory", "held", 1.0),
        ];
        rows.sort_by_key(|(r, _)| r.entity);
        let all = group(rows.clone(), None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].entity, named, "the longest wait comes first");
        assert_eq!(all[0].holders.iter().map(|r| r.job).collect::<Vec<_>>(), [1]);
        assert_eq!(all[0].waiters.iter().map(|r| r.job).collect::<Vec<_>>(), [2, 3], "first waiter first");

        let by_worker = Search::new("Mailer").expect("search");
        let found = group(rows.clone(), Some(&by_worker));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].holders.len() + found[0].waiters.len(), 3, "the whole queue of a match");

        let by_name = Search::new(" nightly-report ").expect("search");
        let found = group(rows.clone(), Some(&by_name));
        assert_eq!(found.len(), 1);
        assert_eq!(by_name.name_of(found[0].entity), Some("nightly-report"));

        let by_uuid = Search::new(&other.to_string()[..8].to_uppercase()).expect("search");
        assert_eq!(group(rows.clone(), Some(&by_uuid))[0].entity, other);
        assert_eq!(group(rows.clone(), Some(&Search::new("INVENT").expect("search")))[0].entity, other);
        assert!(Search::new("Nightly-report").expect("search").name_of(named).is_none(), "names are case-sensitive");

        assert!(group(rows, Some(&Search::new("no-such-thing").expect("search"))).is_empty());
        assert!(Search::new("  ").is_none());
    }

    #[test]
    fn the_namespace_is_the_guest_sdks() {
        assert_eq!(ENTITY_NAMESPACE, Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:pinlock:entity"));
    }
}
