//! Scenario 6, entity mapping: what the first lock on an entity costs over a
//! known one. Three jobs lock and release the same fresh entities in turn:
//! - never seen: a lookup misses and the mapping row is inserted (a
//!   committed write);
//! - cached: same host again, the key comes from its memory;
//! - known to the table, new to the host: a second host (fresh cache) reads
//!   the key (no write).

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::harness::{Host, fresh_entities, ns_list};
use super::plan::Plan;
use super::stats::{Hist, Latency};

/// What scenario 6 measured (acquire + release, guest-visible).
#[derive(Debug, Serialize)]
pub struct Mapping {
    /// Entities never seen by anyone.
    pub first_ever: Latency,
    /// Entities in this host's cache.
    pub cached: Latency,
    /// Entities in the mapping table, not in this host's cache.
    pub new_to_host: Latency,
    /// first_ever p50 − cached p50, µs: the cost of a new mapping.
    pub first_ever_extra_p50_us: f64,
    /// new_to_host p50 − cached p50, µs: the cost of a cache miss.
    pub new_to_host_extra_p50_us: f64,
}

/// Runs scenario 6.
pub async fn run(host: &Host, plan: &Plan) -> anyhow::Result<Mapping> {
    let entities = fresh_entities(plan.mapping_entities);
    let input = json!({"op": "lock_release", "entities": entities});
    let (first_host, second_host) = (host.database(1), host.database(1));
    // Warm-up: each host opens its session on an entity of its own.
    host.premap(&first_host, &[Uuid::new_v4()]).await?;
    host.premap(&second_host, &[Uuid::new_v4()]).await?;

    let first_ever = timed(host, &first_host, &input).await?;
    let cached = timed(host, &first_host, &input).await?;
    let new_to_host = timed(host, &second_host, &input).await?;
    Ok(Mapping {
        first_ever_extra_p50_us: first_ever.p50_us - cached.p50_us,
        new_to_host_extra_p50_us: new_to_host.p50_us - cached.p50_us,
        first_ever,
        cached,
        new_to_host,
    })
}

async fn timed(
    host: &Host,
    db: &std::sync::Arc<pinlock::db::Database>,
    input: &serde_json::Value,
) -> anyhow::Result<Latency> {
    let mut hist = Hist::new();
    hist.record_all(ns_list(&host.job(db, input).await?)?);
    Ok(hist.latency())
}
