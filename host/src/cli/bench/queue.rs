//! Scenario 7, the job queue: `pinlock serve` in this process, on a database
//! of its own (`pinlock_bench_<random>`, created here and dropped after, so
//! nothing mixes with other runs), against `pinlock run` on the same worker,
//! input and session bound in the same run.
//!
//! - **Throughput**: a producer task enqueues N one-lock jobs (guest op
//!   `once` on a random entity of a pool of 32 per slot) in batches of 256;
//!   measured from the first enqueue until the monitor connection sees no
//!   job queued or running (every 2 ms it reads the state of the last job
//!   enqueued, which is claimed last, then checks that none is left).
//!   With 1 host, then with 3 (three [`Server`]s, each with its own host id,
//!   the same `max_jobs` and session bound C). The `run` side is scenario 2's
//!   batch at concurrency C; its rounds take turns with the 1-host rounds.
//! - **Pickup latency**: one job at a time on the idle single host (woken by
//!   `NOTIFY`): `started_at - created_at` of the job row, both the server's
//!   clock (enqueue statement start → claim statement start).
//!
//! The job rows also tell how the work was batched: distinct claim and finish
//! statements (a claim stamps all its jobs with one `started_at`, a finish
//! with one `finished_at`), hence commits per job.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::seq::IndexedRandom;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::config::Host as PgHost;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use pinlock::db::DbConfig;
use pinlock::queue::{NewJob, Queue};
use pinlock::server::config::{ServeConfig, WorkerSection};
use pinlock::server::{ServeTarget, Server};

use super::harness::{BENCH_WASM, Host, fresh_entities};
use super::machine::{ServerCpu, process_cpu};
use super::plan::Plan;
use super::stats::{Hist, Latency, ratio, turns};
use super::throughput::{Rate, pinlock_round};

/// The worker's name on the servers.
const WORKER: &str = "bench";
/// Jobs per enqueue statement.
const ENQUEUE_BATCH: usize = 256;
/// Entities per mapping job of the warm-up (small, so that every host gets some).
const PREMAP_CHUNK: usize = 16;
/// Warm-up `once` jobs per slot of every host.
const WARM_UP_JOBS_PER_SLOT: usize = 10;
/// Pickups run before recording.
const PICKUP_WARM_UP: usize = 10;
/// How often the monitor looks.
const POLL: Duration = Duration::from_millis(2);
/// How often it looks at the one job of a pickup.
const PICKUP_POLL: Duration = Duration::from_millis(1);
/// Drain grace at the end (the servers are idle by then).
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Queue throughput with some number of hosts.
#[derive(Debug, Serialize)]
pub struct QueuePoint {
    /// `pinlock serve` hosts on the database.
    pub hosts: usize,
    /// Jobs per second, first enqueue to the last job done.
    pub per_sec: f64,
    /// Queue / `run` (same worker, input and C).
    pub ratio: Option<f64>,
    /// CPU time of this process per job, µs (every host, the producer, the monitor).
    pub cpu_us: f64,
    /// CPU time of the local PostgreSQL per job, µs (`None`: not on this machine).
    pub server_cpu_us: Option<f64>,
    /// Mean jobs per claim statement.
    pub claim_batch: f64,
    /// Mean jobs per finish statement.
    pub finish_batch: f64,
    /// Committed queue statements per job: enqueues + claims + finishes.
    pub commits_per_job: f64,
    /// Share of the jobs the busiest host ran.
    pub busiest_host_share: f64,
}

/// What scenario 7 measured.
#[derive(Debug, Serialize)]
pub struct QueueBench {
    /// Slots per host (`max_jobs`, worker concurrency and session bound), and
    /// the concurrency of the `run` side.
    pub concurrency: usize,
    /// `run` jobs per second at that concurrency.
    pub run_per_sec: f64,
    /// CPU time of this process per `run` job, µs.
    pub run_cpu_us: f64,
    /// CPU time of the local PostgreSQL per `run` job, µs.
    pub run_server_cpu_us: Option<f64>,
    /// One point per host count.
    pub points: Vec<QueuePoint>,
    /// Enqueue → job start, one job at a time on an idle host.
    pub pickup: Latency,
}

/// Runs scenario 7 on a database of its own, dropped afterwards.
pub async fn run(host: &Host, plan: &Plan, app: &str) -> anyhow::Result<QueueBench> {
    let admin = connect(&host.config, app, "queue-admin").await?;
    let name = format!("pinlock_bench_{}", Uuid::new_v4().simple());
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.with_context(|| format!("creating {name}"))?;
    let measured = in_database(host, plan, app, &name).await;
    let dropped = admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await;
    let bench = measured?;
    dropped.with_context(|| format!("dropping {name}"))?;
    Ok(bench)
}

/// Everything on database `name`; every server started is drained, even on
/// failure.
async fn in_database(host: &Host, plan: &Plan, app: &str, name: &str) -> anyhow::Result<QueueBench> {
    let mut config = with_dbname(&host.config, name)?;
    config.set_application_name(app);
    let run_host = Host {
        runtime: host.runtime.clone(),
        worker: host.worker.clone(),
        config: config.clone(),
        db_settings: host.db_settings.clone(),
    };
    run_host.database(1).migrate().await.with_context(|| format!("preparing {name}"))?;
    let dir = tempfile::tempdir().context("a folder for the bench component")?;
    let component = dir.path().join("pinlock_test_bench.wasm");
    std::fs::write(&component, BENCH_WASM).context("writing the bench component")?;
    let mut servers = Vec::new();
    let measured = measure(&run_host, plan, app, &component, &mut servers).await;
    for server in servers {
        server.drain(DRAIN_GRACE, std::future::pending()).await;
    }
    measured
}

/// The phases, adding hosts as the plan asks.
async fn measure(
    run_host: &Host,
    plan: &Plan,
    app: &str,
    component: &Path,
    servers: &mut Vec<Server>,
) -> anyhow::Result<QueueBench> {
    let slots = plan.queue_concurrency;
    let producer_id = format!("{app}/producer");
    let mut producer_config = run_host.config.clone();
    producer_config.set_application_name(&producer_id);
    let producer = Arc::new(Queue::new(producer_config, producer_id));
    let monitor = Monitor::connect(&run_host.config, app).await?;
    let cache = component.with_file_name("cache");
    let mut run_rate = Rate::default();
    let mut points = Vec::new();
    let mut pickup = None;
    for &hosts in &plan.queue_hosts {
        while servers.len() < hosts {
            servers.push(start_server(run_host, app, servers.len() + 1, slots, component, &cache).await?);
        }
        let entities = fresh_entities(plan.throughput_pool_per_slot * slots * hosts);
        let mut warm_up: Vec<NewJob> = Vec::new();
        for _ in 0..hosts {
            warm_up.extend(
                entities.chunks(PREMAP_CHUNK).map(|chunk| new_job(json!({"op": "lock_release", "entities": chunk}))),
            );
        }
        warm_up.extend(once_jobs(&entities, slots * hosts * WARM_UP_JOBS_PER_SLOT)?);
        run_jobs(&producer, &monitor, warm_up).await.context("queue warm-up")?;

        // The first phase takes turns with `run` and then measures pickups.
        let first = points.is_empty();
        let mut rounds = QueueRound::default();
        for round in 0..plan.queue_rounds {
            for side in turns(round, if first { 2 } else { 1 }) {
                if side == 0 {
                    rounds.add(run_jobs(&producer, &monitor, once_jobs(&entities, plan.queue_jobs)?).await?);
                } else {
                    run_rate.add(pinlock_round(run_host, &entities, slots, plan.queue_jobs).await?);
                }
            }
        }
        if first {
            pickup = Some(pickups(&producer, &monitor, &entities, plan.queue_pickups).await?);
        }
        points.push(rounds.point(hosts));
    }
    let run_per_sec = run_rate.per_sec();
    for point in &mut points {
        point.ratio = ratio(point.per_sec, run_per_sec);
    }
    Ok(QueueBench {
        concurrency: slots,
        run_per_sec,
        run_cpu_us: run_rate.cpu_us_each(),
        run_server_cpu_us: run_rate.server_cpu_us_each(),
        points,
        pickup: pickup.unwrap_or_default(),
    })
}

/// Starts host number `index` serving the bench worker with `slots` slots.
async fn start_server(
    run_host: &Host,
    app: &str,
    index: usize,
    slots: usize,
    component: &Path,
    cache: &Path,
) -> anyhow::Result<Server> {
    let host_id = format!("{app}/queue-{index}");
    let mut db = run_host.config.clone();
    db.set_application_name(&host_id);
    let mut config = ServeConfig::default();
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.max_jobs = slots;
    config.database.max_sessions = Some(slots);
    let mut worker = WorkerSection::new(component);
    worker.concurrency = slots;
    config.workers.insert(WORKER.into(), worker);
    config.check()?;
    let target =
        ServeTarget { db, host_id, cache_dir: Some(cache.to_path_buf()), db_settings: run_host.db_settings.clone() };
    Server::start(config, target).await.with_context(|| format!("starting queue host {index}"))
}

/// Jobs through the queue, as the rows tell it: one batch, or the measured
/// batches of a phase summed. Rate, CPU and server CPU are scenario 2's [`Rate`].
#[derive(Default)]
struct QueueRound {
    rate: Rate,
    enqueues: usize,
    claims: usize,
    finishes: usize,
    per_host: HashMap<String, usize>,
}

impl QueueRound {
    fn add(&mut self, round: QueueRound) {
        self.rate.add(round.rate);
        self.enqueues += round.enqueues;
        self.claims += round.claims;
        self.finishes += round.finishes;
        for (host, jobs) in round.per_host {
            *self.per_host.entry(host).or_default() += jobs;
        }
    }

    fn point(&self, hosts: usize) -> QueuePoint {
        let done = self.rate.done;
        let per = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let busiest = self.per_host.values().copied().max().unwrap_or(0);
        QueuePoint {
            hosts,
            per_sec: self.rate.per_sec(),
            ratio: None,
            cpu_us: self.rate.cpu_us_each(),
            server_cpu_us: self.rate.server_cpu_us_each(),
            claim_batch: per(done, self.claims),
            finish_batch: per(done, self.finishes),
            commits_per_job: per(self.enqueues + self.claims + self.finishes, done),
            busiest_host_share: per(busiest, done),
        }
    }
}

/// Enqueues `jobs` from a producer task in batches, waits until none is
/// queued or running, and checks that every one succeeded.
async fn run_jobs(producer: &Arc<Queue>, monitor: &Monitor, jobs: Vec<NewJob>) -> anyhow::Result<QueueRound> {
    let base = monitor.last_id().await?;
    let batches: Vec<Vec<NewJob>> = jobs.chunks(ENQUEUE_BATCH).map(<[NewJob]>::to_vec).collect();
    let enqueues = batches.len();
    let server = ServerCpu::read(&monitor.dbname);
    let (started, cpu) = (Instant::now(), process_cpu());
    let producing = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for batch in batches {
                let ids = producer.enqueue(&batch).await.context("enqueueing bench jobs")?;
                last = ids.iter().map(|&(id, _)| id).max().unwrap_or(last);
            }
            anyhow::Ok(last)
        })
    };
    let last = producing.await.context("the producer panicked")??;
    // The last job is claimed last: wait for it (a primary key lookup),
    // then for the rest (two index probes that walk the dead entries too).
    while matches!(monitor.job(last).await?.0.as_str(), "queued" | "running") {
        tokio::time::sleep(POLL).await;
    }
    while !monitor.idle().await? {
        tokio::time::sleep(POLL).await;
    }
    let (wall, cpu) = (started.elapsed(), process_cpu().saturating_sub(cpu));
    let server_cpu = server.and_then(|server| server.elapsed());
    let rows = monitor.since(base).await?;
    if rows.succeeded != jobs.len() || rows.jobs != jobs.len() {
        bail!(
            "{} of {} queued bench jobs succeeded ({} rows); first error: {}",
            rows.succeeded,
            jobs.len(),
            rows.jobs,
            rows.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(QueueRound {
        rate: Rate { done: rows.succeeded, wall, cpu, server_cpu, rounds: 1 },
        enqueues,
        claims: rows.claims,
        finishes: rows.finishes,
        per_host: rows.per_host,
    })
}

/// `count` pickups, one job at a time, each waited for until it succeeded.
async fn pickups(producer: &Queue, monitor: &Monitor, entities: &[Uuid], count: usize) -> anyhow::Result<Latency> {
    let mut hist = Hist::new();
    for i in 0..PICKUP_WARM_UP + count {
        let job = once_jobs(entities, 1)?;
        let (id, _) = *producer.enqueue(&job).await.context("enqueueing a pickup job")?.first().context("no id")?;
        let secs = loop {
            tokio::time::sleep(PICKUP_POLL).await;
            let (state, pickup, error) = monitor.job(id).await?;
            match state.as_str() {
                "succeeded" => break pickup.context("a finished job without started_at")?,
                "queued" | "running" => {}
                _ => bail!("pickup job {id} ended {state}: {}", error.unwrap_or_default()),
            }
        };
        if i >= PICKUP_WARM_UP {
            hist.record(Duration::from_secs_f64(secs.max(0.0)));
        }
    }
    Ok(hist.latency())
}

fn new_job(input: serde_json::Value) -> NewJob {
    // One attempt: a failure shows at once, not after a backoff.
    NewJob { worker: WORKER.into(), input, run_at: None, max_attempts: 1, unique_key: None }
}

/// `count` `once` jobs on random entities of the pool.
fn once_jobs(entities: &[Uuid], count: usize) -> anyhow::Result<Vec<NewJob>> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let entity = entities.choose(&mut rng).context("empty entity pool")?;
            Ok(new_job(json!({"op": "once", "entity": entity})))
        })
        .collect()
}

/// The monitor's connection and statements.
struct Monitor {
    client: Client,
    /// The database watched.
    dbname: String,
    idle: tokio_postgres::Statement,
    job: tokio_postgres::Statement,
}

/// What the rows of a round say.
struct RoundRows {
    jobs: usize,
    succeeded: usize,
    claims: usize,
    finishes: usize,
    first_error: Option<String>,
    per_host: HashMap<String, usize>,
}

impl Monitor {
    async fn connect(config: &DbConfig, app: &str) -> anyhow::Result<Self> {
        let client = connect(config, app, "queue-monitor").await?;
        // Each EXISTS stops at the first entry of a small partial index.
        let idle = client
            .prepare(
                "SELECT NOT EXISTS (SELECT 1 FROM pinlock.jobs WHERE state = 'queued')
                    AND NOT EXISTS (SELECT 1 FROM pinlock.jobs WHERE state = 'running')",
            )
            .await
            .context("preparing the monitor's query")?;
        let job = client
            .prepare(
                "SELECT state, extract(epoch FROM started_at - created_at)::float8, error
                   FROM pinlock.jobs WHERE id = $1",
            )
            .await
            .context("preparing the monitor's query")?;
        let dbname = config.driver_config().get_dbname().unwrap_or_default().to_owned();
        Ok(Self { client, dbname, idle, job })
    }

    async fn last_id(&self) -> anyhow::Result<i64> {
        let row = self.client.query_one("SELECT coalesce(max(id), 0) FROM pinlock.jobs", &[]).await?;
        Ok(row.get(0))
    }

    /// Whether no job is queued or running.
    async fn idle(&self) -> anyhow::Result<bool> {
        Ok(self.client.query_one(&self.idle, &[]).await.context("watching the queue")?.get(0))
    }

    /// Job `id`: its state, its pickup in seconds, its error.
    async fn job(&self, id: i64) -> anyhow::Result<(String, Option<f64>, Option<String>)> {
        let row = self.client.query_one(&self.job, &[&id]).await.context("reading a pickup job")?;
        Ok((row.get(0), row.get(1), row.get(2)))
    }

    /// The rows of the jobs after id `base`.
    async fn since(&self, base: i64) -> anyhow::Result<RoundRows> {
        let row = self
            .client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'),
                        count(DISTINCT (host, started_at)), count(DISTINCT (host, finished_at)),
                        min(error) FILTER (WHERE state <> 'succeeded')
                   FROM pinlock.jobs WHERE id > $1",
                &[&base],
            )
            .await
            .context("reading the round's jobs")?;
        let count = |i: usize| row.get::<_, i64>(i) as usize;
        let per_host = self
            .client
            .query("SELECT coalesce(host, ''), count(*) FROM pinlock.jobs WHERE id > $1 GROUP BY 1", &[&base])
            .await
            .context("reading the round's hosts")?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
            .collect();
        Ok(RoundRows {
            jobs: count(0),
            succeeded: count(1),
            claims: count(2),
            finishes: count(3),
            first_error: row.get(4),
            per_host,
        })
    }
}

/// A plain connection named `<app>/<role>`.
async fn connect(config: &DbConfig, app: &str, role: &str) -> anyhow::Result<Client> {
    let mut driver = config.driver_config().clone();
    driver.application_name(format!("{app}/{role}"));
    let (client, connection) =
        driver.connect(NoTls).await.with_context(|| format!("connecting to {}", config.display_target()))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "bench connection ended");
        }
    });
    Ok(client)
}

/// `config` on database `dbname` (host, port, user and password kept).
fn with_dbname(config: &DbConfig, dbname: &str) -> anyhow::Result<DbConfig> {
    let driver = config.driver_config();
    let quote = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = Vec::new();
    let hosts: Vec<String> = driver
        .get_hosts()
        .iter()
        .map(|host| match host {
            PgHost::Tcp(name) => name.clone(),
            PgHost::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", quote(&hosts.join(","))));
    }
    let ports: Vec<String> = driver.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", ports.join(",")));
    }
    if let Some(user) = driver.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(password) = driver.get_password() {
        let password = std::str::from_utf8(password).context("the database password is not UTF-8")?;
        parts.push(format!("password={}", quote(password)));
    }
    parts.push(format!("dbname={}", quote(dbname)));
    DbConfig::parse(&parts.join(" ")).with_context(|| format!("a configuration for database {dbname}"))
}
