//! Scenario 2, throughput: C jobs at once, each a fresh instance that
//! acquires and releases one random entity (guest op `once`), run through
//! [`pinlock::batch::Batch`] with a session bound of C; against C raw
//! connections doing lock/unlock pairs on random keys. Both draw from pools
//! of the same size (32 per concurrent job), so they collide equally rarely
//! (about 3 % of picks), and the pinlock pool is mapped in the warm-up. The
//! fenced floor runs pinlock's lock statement (lock + fencing token).
//!
//! PostgreSQL allows 100 connections here, so the two sides never have their
//! connections open at once: each round opens its own and closes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::seq::IndexedRandom;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::floor::{FloorConn, LockSql, distinct_floor_keys};
use super::harness::{Host, fresh_entities};
use super::machine::{ServerCpu, process_cpu};
use super::plan::Plan;
use super::stats::{ratio, turns};

/// Jobs per concurrent job run before measuring (opens every session).
const WARM_UP_JOBS_PER_SLOT: usize = 10;

/// Throughput at one concurrency.
#[derive(Debug, Serialize)]
pub struct ThroughputPoint {
    /// Jobs (connections) at once.
    pub concurrency: usize,
    /// pinlock jobs per second.
    pub pinlock_per_sec: f64,
    /// Raw lock/unlock pairs per second.
    pub floor_per_sec: f64,
    /// Raw pairs per second with pinlock's lock statement.
    pub floor_fenced_per_sec: f64,
    /// pinlock / floor.
    pub ratio: Option<f64>,
    /// CPU time of this process per pinlock job, µs (host, runtime, guest).
    pub pinlock_cpu_us: f64,
    /// CPU time of this process per floor pair, µs (client side only).
    pub floor_cpu_us: f64,
    /// CPU time of the local PostgreSQL's backends per pinlock job, µs
    /// (`None`: the server is not on this machine).
    pub pinlock_server_cpu_us: Option<f64>,
    /// The same per floor pair.
    pub floor_server_cpu_us: Option<f64>,
}

/// What scenario 2 measured.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// One point per concurrency.
    pub points: Vec<ThroughputPoint>,
}

/// Runs scenario 2.
pub async fn run(host: &Host, plan: &Plan, app: &str) -> anyhow::Result<Throughput> {
    let mut points = Vec::new();
    for &concurrency in &plan.throughput_concurrency {
        let pool = plan.throughput_pool_per_slot * concurrency;
        let entities = fresh_entities(pool);
        let keys = Arc::new(distinct_floor_keys(pool));
        let jobs = plan.throughput_jobs;
        // Side 0 is pinlock, 1 the floor, 2 the fenced floor; each round
        // starts with the next side.
        let side = async |which: usize| match which {
            0 => pinlock_round(host, &entities, concurrency, jobs).await,
            1 => floor_round(host, app, &keys, LockSql::Plain, concurrency, jobs).await,
            _ => floor_round(host, app, &keys, LockSql::Fenced, concurrency, jobs).await,
        };
        let mut rates = [Rate::default(), Rate::default(), Rate::default()];
        for round in 0..plan.throughput_rounds {
            for which in turns(round, rates.len()) {
                rates[which].add(side(which).await?);
            }
        }
        let [p, f, fenced] = rates.each_ref().map(Rate::per_sec);
        points.push(ThroughputPoint {
            concurrency,
            pinlock_per_sec: p,
            floor_per_sec: f,
            floor_fenced_per_sec: fenced,
            ratio: ratio(p, f),
            pinlock_cpu_us: rates[0].cpu_us_each(),
            floor_cpu_us: rates[1].cpu_us_each(),
            pinlock_server_cpu_us: rates[0].server_cpu_us_each(),
            floor_server_cpu_us: rates[1].server_cpu_us_each(),
        });
    }
    Ok(Throughput { points })
}

/// Work done, its wall time and this process's CPU time, over rounds.
#[derive(Default)]
pub(super) struct Rate {
    pub(super) done: usize,
    pub(super) wall: Duration,
    pub(super) cpu: Duration,
    /// CPU time of the local PostgreSQL processes (`None`: not visible).
    pub(super) server_cpu: Option<Duration>,
    /// Rounds summed.
    pub(super) rounds: usize,
}

impl Rate {
    pub(super) fn add(&mut self, round: Rate) {
        self.done += round.done;
        self.wall += round.wall;
        self.cpu += round.cpu;
        self.server_cpu = match self.rounds {
            0 => round.server_cpu,
            _ => self.server_cpu.zip(round.server_cpu).map(|(sum, round)| sum + round),
        };
        self.rounds += round.rounds;
    }

    pub(super) fn per_sec(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 { self.done as f64 / secs } else { 0.0 }
    }

    pub(super) fn cpu_us_each(&self) -> f64 {
        if self.done == 0 { 0.0 } else { self.cpu.as_secs_f64() * 1e6 / self.done as f64 }
    }

    /// The local PostgreSQL's CPU time per job, µs (`None`: not visible).
    pub(super) fn server_cpu_us_each(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        Some(if self.done == 0 { 0.0 } else { cpu.as_secs_f64() * 1e6 / self.done as f64 })
    }
}

/// One measured batch of `jobs` `once` jobs, `concurrency` at a time, on a
/// fresh database handle (warmed up first, then dropped: its sessions close).
/// Also the `run` side of scenario 7.
pub(super) async fn pinlock_round(
    host: &Host,
    entities: &[Uuid],
    concurrency: usize,
    jobs: usize,
) -> anyhow::Result<Rate> {
    let db = host.database(concurrency);
    host.premap(&db, entities).await?;
    let warm_up = once_inputs(entities, concurrency * WARM_UP_JOBS_PER_SLOT)?;
    host.batch(&db, warm_up, concurrency).await.context("throughput warm-up")?;
    let inputs = once_inputs(entities, jobs)?;
    let (cpu, server) = (process_cpu(), ServerCpu::read(&host.dbname()));
    let run = host.batch(&db, inputs, concurrency).await?;
    let server_cpu = server.and_then(|server| server.elapsed());
    Ok(Rate { done: run.outputs.len(), wall: run.wall, cpu: process_cpu().saturating_sub(cpu), server_cpu, rounds: 1 })
}

/// Inputs of `jobs` `once` jobs on random entities of the pool.
fn once_inputs(entities: &[Uuid], jobs: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut rng = rand::rng();
    (0..jobs)
        .map(|_| {
            let entity = entities.choose(&mut rng).context("empty entity pool")?;
            Ok(serde_json::to_vec(&json!({"op": "once", "entity": entity}))?)
        })
        .collect()
}

/// `pairs` lock/unlock pairs on random keys over `concurrency` fresh raw
/// connections (warmed up with one pair each, then closed). Each connection
/// and its loop run on one shard, spread as pinlock's lanes are (see
/// `pinlock::shard`), so both sides have the same threads.
async fn floor_round(
    host: &Host,
    app: &str,
    keys: &Arc<Vec<i64>>,
    sql: LockSql,
    concurrency: usize,
    pairs: usize,
) -> anyhow::Result<Rate> {
    let picks: Arc<Vec<i64>> = {
        let mut rng = rand::rng();
        Arc::new((0..pairs).filter_map(|_| keys.choose(&mut rng).copied()).collect())
    };
    let next = Arc::new(AtomicUsize::new(0));
    let (go, started_rx) = tokio::sync::watch::channel(false);
    let (ready, mut readied) = tokio::sync::mpsc::channel(concurrency.max(1));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (picks, next, ready, mut go) = (picks.clone(), next.clone(), ready.clone(), started_rx.clone());
            let (config, app, warm_key) = (host.config.clone(), app.to_owned(), keys[0]);
            pinlock::shard::spawn(async move {
                let connected = async {
                    let conn = FloorConn::connect(&config, &app, "floor").await?;
                    conn.lock_unlock(sql, warm_key).await?;
                    anyhow::Ok(conn)
                };
                let conn = match connected.await {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready.send(Err(format!("{e:#}"))).await;
                        return Err(e);
                    }
                };
                let _ = ready.send(Ok(())).await;
                go.wait_for(|&go| go).await.context("the floor round was abandoned")?;
                while let Some(&key) = picks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    conn.lock_unlock(sql, key).await?;
                }
                anyhow::Ok(conn)
            })
        })
        .collect();
    drop(ready);
    for _ in 0..concurrency {
        match readied.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => anyhow::bail!("a floor connection failed: {e}"),
            None => anyhow::bail!("a floor task ended before it was ready"),
        }
    }
    let server = ServerCpu::read(&host.dbname());
    let (started, cpu) = (Instant::now(), process_cpu());
    go.send_replace(true);
    // The connections stay open until the server's CPU is read: a backend
    // that has exited is not counted.
    let mut conns = Vec::with_capacity(concurrency);
    for result in futures_util::future::join_all(tasks).await {
        conns.push(result.context("a floor task panicked")??);
    }
    let wall = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu);
    let server_cpu = server.and_then(|server| server.elapsed());
    Ok(Rate { done: picks.len(), wall, cpu, server_cpu, rounds: 1 })
}
