//! Scenario 2, throughput: C jobs at once, each a fresh instance that
//! acquires and releases one random entity (guest op `once`), run through
//! [`pinlock::batch::Batch`] with a session bound of C; against C raw
//! connections doing lock/unlock pairs on random keys. Both draw from pools
//! of the same size (32 per concurrent job), so they collide equally rarely
//! (about 3 % of picks), and the pinlock pool is mapped in the warm-up.
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

use super::floor::{FloorConn, distinct_floor_keys};
use super::harness::{Host, fresh_entities};
use super::plan::Plan;
use super::stats::ratio;

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
    /// pinlock / floor.
    pub ratio: Option<f64>,
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
        let (mut pinlock, mut floor) = (Rate::default(), Rate::default());
        for round in 0..plan.throughput_rounds {
            if round % 2 == 0 {
                pinlock.add(pinlock_round(host, &entities, concurrency, plan.throughput_jobs).await?);
                floor.add(floor_round(host, app, &keys, concurrency, plan.throughput_jobs).await?);
            } else {
                floor.add(floor_round(host, app, &keys, concurrency, plan.throughput_jobs).await?);
                pinlock.add(pinlock_round(host, &entities, concurrency, plan.throughput_jobs).await?);
            }
        }
        let (p, f) = (pinlock.per_sec(), floor.per_sec());
        points.push(ThroughputPoint { concurrency, pinlock_per_sec: p, floor_per_sec: f, ratio: ratio(p, f) });
    }
    Ok(Throughput { points })
}

/// Work done over time, summed over rounds.
#[derive(Default)]
struct Rate {
    done: usize,
    wall: Duration,
}

impl Rate {
    fn add(&mut self, (done, wall): (usize, Duration)) {
        self.done += done;
        self.wall += wall;
    }

    fn per_sec(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 { self.done as f64 / secs } else { 0.0 }
    }
}

/// One measured batch of `jobs` `once` jobs, `concurrency` at a time, on a
/// fresh database handle (warmed up first, then dropped: its sessions close).
async fn pinlock_round(
    host: &Host,
    entities: &[Uuid],
    concurrency: usize,
    jobs: usize,
) -> anyhow::Result<(usize, Duration)> {
    let db = host.database(concurrency);
    host.premap(&db, entities).await?;
    let warm_up = once_inputs(entities, concurrency * WARM_UP_JOBS_PER_SLOT)?;
    host.batch(&db, warm_up, concurrency).await.context("throughput warm-up")?;
    let run = host.batch(&db, once_inputs(entities, jobs)?, concurrency).await?;
    Ok((run.outputs.len(), run.wall))
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
/// connections (warmed up with one pair each, then closed).
async fn floor_round(
    host: &Host,
    app: &str,
    keys: &Arc<Vec<i64>>,
    concurrency: usize,
    pairs: usize,
) -> anyhow::Result<(usize, Duration)> {
    let conns = FloorConn::connect_many(&host.config, app, concurrency).await?;
    for conn in &conns {
        conn.lock_unlock(keys[0]).await?;
    }
    let picks: Arc<Vec<i64>> = {
        let mut rng = rand::rng();
        Arc::new((0..pairs).filter_map(|_| keys.choose(&mut rng).copied()).collect())
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks = conns.into_iter().map(|conn| {
        let (picks, next) = (picks.clone(), next.clone());
        tokio::spawn(async move {
            while let Some(&key) = picks.get(next.fetch_add(1, Ordering::Relaxed)) {
                conn.lock_unlock(key).await?;
            }
            anyhow::Ok(())
        })
    });
    for result in futures_util::future::join_all(tasks).await {
        result.context("a floor task panicked")??;
    }
    Ok((picks.len(), started.elapsed()))
}
