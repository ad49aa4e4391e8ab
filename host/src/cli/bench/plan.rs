//! How much each scenario runs: the full plan (for BENCHMARKS.md) and the
//! quick one (CI; well under a minute).

use serde::Serialize;

/// Sizes of every scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Whether this is the `--quick` plan.
    pub quick: bool,
    /// Scenario 1: rounds, taking turns between pinlock, the floor and the fenced floor.
    pub uncontended_rounds: usize,
    /// Scenario 1: distinct entities (keys) per round.
    pub uncontended_per_round: usize,
    /// Scenario 2: concurrent jobs (connections) tried.
    pub throughput_concurrency: Vec<usize>,
    /// Scenario 2: jobs per measured round.
    pub throughput_jobs: usize,
    /// Scenario 2: measured rounds per side and concurrency.
    pub throughput_rounds: usize,
    /// Scenario 2: entities (keys) the random pick draws from, per
    /// concurrent job (so two jobs pick the same one about 1/this of the time).
    pub throughput_pool_per_slot: usize,
    /// Scenario 3: jobs (connections) on the one entity.
    pub handoff_waiters: Vec<usize>,
    /// Scenario 3: grants per run, spread over the waiters.
    pub handoff_grants: usize,
    /// Scenario 3: measured runs per side and waiter count.
    pub handoff_rounds: usize,
    /// Scenario 4: empty jobs timed one by one.
    pub overhead_jobs: usize,
    /// Scenario 5: (jobs, locks per job) held at once.
    pub held: Vec<(usize, usize)>,
    /// Scenario 5: how long each job holds its locks, in ms.
    pub held_ms: u64,
    /// Scenario 6: fresh entities locked first, then again.
    pub mapping_entities: usize,
    /// Scenario 7: slots of each queue host (`max_jobs`, worker concurrency
    /// and session bound), and the concurrency of the `run` it is compared to.
    pub queue_concurrency: usize,
    /// Scenario 7: host counts measured, in order (hosts are added, never removed).
    pub queue_hosts: Vec<usize>,
    /// Scenario 7: jobs per measured round.
    pub queue_jobs: usize,
    /// Scenario 7: measured rounds per host count (and of `run`).
    pub queue_rounds: usize,
    /// Scenario 7: pickups timed one job at a time.
    pub queue_pickups: usize,
}

impl Plan {
    /// The plan for a full or a `--quick` run.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                uncontended_rounds: 6,
                uncontended_per_round: 500,
                throughput_concurrency: vec![1, 4, 16, 64],
                throughput_jobs: 1500,
                throughput_rounds: 1,
                throughput_pool_per_slot: 32,
                handoff_waiters: vec![2, 8, 32],
                handoff_grants: 600,
                handoff_rounds: 1,
                overhead_jobs: 2000,
                held: vec![(20, 5), (100, 5)],
                held_ms: 50,
                mapping_entities: 100,
                queue_concurrency: 16,
                queue_hosts: vec![1, 3],
                queue_jobs: 1500,
                queue_rounds: 1,
                queue_pickups: 50,
            }
        } else {
            Self {
                quick,
                uncontended_rounds: 20,
                uncontended_per_round: 1000,
                throughput_concurrency: vec![1, 4, 16, 64],
                throughput_jobs: 10_000,
                throughput_rounds: 3,
                throughput_pool_per_slot: 32,
                handoff_waiters: vec![2, 8, 32],
                handoff_grants: 4000,
                handoff_rounds: 2,
                overhead_jobs: 10_000,
                held: vec![(100, 10), (1000, 10), (10_000, 1)],
                held_ms: 200,
                mapping_entities: 500,
                queue_concurrency: 16,
                queue_hosts: vec![1, 3],
                queue_jobs: 10_000,
                queue_rounds: 3,
                queue_pickups: 200,
            }
        }
    }

    /// The most jobs any scenario runs at once (sizes the instance pool).
    pub fn max_concurrent_jobs(&self) -> usize {
        let throughput = self.throughput_concurrency.iter().copied().max().unwrap_or(1);
        let handoff = self.handoff_waiters.iter().copied().max().unwrap_or(1);
        let held = self.held.iter().map(|&(jobs, _)| jobs).max().unwrap_or(1);
        throughput.max(handoff).max(held).max(16)
    }
}
