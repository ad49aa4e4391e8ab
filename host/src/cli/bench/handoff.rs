//! Scenario 3, contended hand-off: N jobs loop on one entity (guest op
//! `handoff`: acquire, note the grant and release instants, release), against
//! N raw connections doing the same on one key. A hand-off is the time from a
//! holder noting its release to the next holder (another job) noting its
//! grant: the unlock round trip, the server's wake-up of the waiter, and the
//! waiter's side of the answer. The fenced floor runs pinlock's lock
//! statement (lock + fencing token) on the raw connections.

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::floor::{FloorConn, LockSql, floor_key};
use super::harness::{Host, parse_output, u64_list};
use super::plan::Plan;
use super::stats::{Hist, Latency, ratio, turns};

/// Share of grants dropped at each end of a run (start-up and wind-down,
/// when not every job is waiting).
const TRIM: f64 = 0.1;
/// Rounds each job runs in the warm-up.
const WARM_UP_ROUNDS: usize = 3;

/// Hand-off at one number of waiters.
#[derive(Debug, Serialize)]
pub struct HandoffPoint {
    /// Jobs (connections) on the entity.
    pub waiters: usize,
    /// Release → next grant, pinlock.
    pub pinlock: Latency,
    /// Release → next grant, raw connections.
    pub floor: Latency,
    /// Release → next grant, raw connections with pinlock's lock statement.
    pub floor_fenced: Latency,
    /// pinlock p50 / floor p50.
    pub ratio_p50: Option<f64>,
    /// Grants per second, pinlock.
    pub pinlock_grants_per_sec: f64,
    /// Grants per second, raw connections.
    pub floor_grants_per_sec: f64,
    /// Grants per second, raw connections with pinlock's lock statement.
    pub floor_fenced_grants_per_sec: f64,
}

/// What scenario 3 measured.
#[derive(Debug, Serialize)]
pub struct Handoff {
    /// One point per number of waiters.
    pub points: Vec<HandoffPoint>,
}

/// Grant and release instants (wall clock, ns) of one job or connection.
type Events = Vec<(u64, u64)>;

/// Runs scenario 3.
pub async fn run(host: &Host, plan: &Plan, app: &str) -> anyhow::Result<Handoff> {
    let mut points = Vec::new();
    for &waiters in &plan.handoff_waiters {
        let rounds = (plan.handoff_grants / waiters).max(10);
        let (entity, key) = (Uuid::new_v4(), floor_key());
        // Side 0 is pinlock, 1 the floor, 2 the fenced floor; each round
        // starts with the next side.
        let side = async |which: usize| match which {
            0 => pinlock_run(host, entity, waiters, rounds).await,
            1 => floor_run(host, app, LockSql::Plain, key, waiters, rounds).await,
            _ => floor_run(host, app, LockSql::Fenced, key, waiters, rounds).await,
        };
        let mut tallies = [Tally::new(), Tally::new(), Tally::new()];
        for round in 0..plan.handoff_rounds {
            for which in turns(round, tallies.len()) {
                tallies[which].add(&side(which).await?);
            }
        }
        let [pinlock, floor, fenced] = tallies;
        let (p, f) = (pinlock.hist.latency(), floor.hist.latency());
        points.push(HandoffPoint {
            waiters,
            ratio_p50: ratio(p.p50_us, f.p50_us),
            pinlock: p,
            floor: f,
            floor_fenced: fenced.hist.latency(),
            pinlock_grants_per_sec: pinlock.grants_per_sec(),
            floor_grants_per_sec: floor.grants_per_sec(),
            floor_fenced_grants_per_sec: fenced.grants_per_sec(),
        });
    }
    Ok(Handoff { points })
}

/// `waiters` jobs of `rounds` hand-offs each on `entity`, on a fresh database
/// handle whose sessions are opened by a warm-up first.
async fn pinlock_run(host: &Host, entity: Uuid, waiters: usize, rounds: usize) -> anyhow::Result<Vec<Events>> {
    let db = host.database(waiters);
    host.premap(&db, &[entity]).await?;
    let inputs = |rounds: usize| -> anyhow::Result<Vec<Vec<u8>>> {
        let input = serde_json::to_vec(&json!({"op": "handoff", "entity": entity, "rounds": rounds}))?;
        Ok(vec![input; waiters])
    };
    host.batch(&db, inputs(WARM_UP_ROUNDS)?, waiters).await?;
    let run = host.batch(&db, inputs(rounds)?, waiters).await?;
    run.outputs
        .iter()
        .map(|output| {
            let output = parse_output(output)?;
            let (grants, releases) = (u64_list(&output, "grants")?, u64_list(&output, "releases")?);
            Ok(grants.into_iter().zip(releases).collect())
        })
        .collect()
}

/// The same on `waiters` fresh raw connections and one floor key.
async fn floor_run(
    host: &Host,
    app: &str,
    sql: LockSql,
    key: i64,
    waiters: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Events>> {
    let conns = FloorConn::connect_many(&host.config, app, waiters).await?;
    for conn in &conns {
        conn.handoff(sql, key, WARM_UP_ROUNDS).await?;
    }
    let tasks = conns.into_iter().map(|conn| tokio::spawn(async move { conn.handoff(sql, key, rounds).await }));
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.context("a floor task panicked")?)
        .collect()
}

/// Hand-offs and grant rate accumulated over runs.
struct Tally {
    hist: Hist,
    grants: usize,
    span_ns: u64,
}

impl Tally {
    fn new() -> Self {
        Self { hist: Hist::new(), grants: 0, span_ns: 0 }
    }

    /// Adds one run: sorts every grant in time, trims both ends, and times
    /// each change of holder.
    fn add(&mut self, runs: &[Events]) {
        let mut grants: Vec<(u64, u64, usize)> = runs
            .iter()
            .enumerate()
            .flat_map(|(holder, events)| events.iter().map(move |&(grant, release)| (grant, release, holder)))
            .collect();
        grants.sort_unstable();
        let trim = (grants.len() as f64 * TRIM) as usize;
        let window = &grants[trim..grants.len() - trim];
        for pair in window.windows(2) {
            let ((_, released, before), (granted, _, after)) = (pair[0], pair[1]);
            if before != after {
                self.hist.record_ns(granted.saturating_sub(released));
            }
        }
        if let (Some(first), Some(last)) = (window.first(), window.last()) {
            self.grants += window.len() - 1;
            self.span_ns += last.0.saturating_sub(first.0);
        }
    }

    fn grants_per_sec(&self) -> f64 {
        if self.span_ns == 0 { 0.0 } else { self.grants as f64 * 1e9 / self.span_ns as f64 }
    }
}
