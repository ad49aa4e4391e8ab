//! Scenario 1, uncontended latency: one job acquires and releases distinct
//! entities in a loop (the guest times each pair), against one raw connection
//! doing `pg_advisory_lock` + `pg_advisory_unlock` on distinct keys, and the
//! same connection running pinlock's lock statement (with its fencing token).
//! The sides take turns, each round starting with the next one, so that noise
//! lands on all of them.
//!
//! The entities are mapped in the warm-up: a first-ever entity also costs its
//! mapping (scenario 6 measures that).

use serde::Serialize;
use serde_json::json;

use super::floor::{FloorConn, LockSql, distinct_floor_keys};
use super::harness::{Host, fresh_entities, ns_list};
use super::plan::Plan;
use super::stats::{CurvePoint, Hist, Latency, ratio, turns};

/// What scenario 1 measured.
#[derive(Debug, Serialize)]
pub struct Uncontended {
    /// Guest-visible acquire + release.
    pub pinlock: Latency,
    /// Raw lock + unlock.
    pub floor: Latency,
    /// Raw, with pinlock's lock statement (lock + fencing token) + unlock.
    pub floor_fenced: Latency,
    /// pinlock p50 / floor p50.
    pub ratio_p50: Option<f64>,
    /// pinlock p99 / floor p99.
    pub ratio_p99: Option<f64>,
    /// Percentile curve of pinlock (for the plot).
    pub pinlock_curve: Vec<CurvePoint>,
    /// Percentile curve of the floor.
    pub floor_curve: Vec<CurvePoint>,
    /// Percentile curve of the fenced floor.
    pub floor_fenced_curve: Vec<CurvePoint>,
}

/// The three things measured, in turn.
const SIDES: usize = 3;

/// Runs scenario 1.
pub async fn run(host: &Host, plan: &Plan, app: &str) -> anyhow::Result<Uncontended> {
    let db = host.database(host.db_settings.max_sessions);
    let entities = fresh_entities(plan.uncontended_per_round);
    let keys = distinct_floor_keys(plan.uncontended_per_round);
    let conn = FloorConn::connect(&host.config, app, "floor").await?;
    let input = json!({"op": "lock_release", "entities": entities});

    // Warm-up, not recorded: maps the entities, opens the session, and runs
    // each side once.
    host.premap(&db, &entities).await?;
    // One round of side 0 (pinlock), 1 (floor) or 2 (fenced floor).
    let side = async |which: usize| -> anyhow::Result<Vec<u64>> {
        match which {
            0 => ns_list(&host.job(&db, &input).await?),
            1 => floor_round(&conn, LockSql::Plain, &keys).await,
            _ => floor_round(&conn, LockSql::Fenced, &keys).await,
        }
    };
    for which in 0..SIDES {
        side(which).await?;
    }
    let mut hists = [Hist::new(), Hist::new(), Hist::new()];
    for round in 0..plan.uncontended_rounds {
        for which in turns(round, SIDES) {
            hists[which].record_all(side(which).await?);
        }
    }
    let [pinlock, floor, fenced] = hists;
    let (p, f) = (pinlock.latency(), floor.latency());
    Ok(Uncontended {
        ratio_p50: ratio(p.p50_us, f.p50_us),
        ratio_p99: ratio(p.p99_us, f.p99_us),
        pinlock_curve: pinlock.curve(),
        floor_curve: floor.curve(),
        floor_fenced_curve: fenced.curve(),
        floor_fenced: fenced.latency(),
        pinlock: p,
        floor: f,
    })
}

/// Locks and unlocks each key in turn; the time of each pair in ns.
async fn floor_round(conn: &FloorConn, sql: LockSql, keys: &[i64]) -> anyhow::Result<Vec<u64>> {
    let mut ns = Vec::with_capacity(keys.len());
    for &key in keys {
        ns.push(conn.lock_unlock(sql, key).await?);
    }
    Ok(ns)
}
