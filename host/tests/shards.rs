//! Shards (`pinlock::shard`, docs/design/threads.md), against real
//! PostgreSQL: a job is packed onto a shared session of its own shard while
//! the session bound allows, and past it the jobs of every shard are spread
//! evenly over all shared sessions, whichever shard opened them.
//!
//! One test: the shards are started once per process.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::*;
use pinlock::db::{Database, DbSettings, LockMode};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// Jobs that hold one lock each until released, each started on the next
/// shard in turn.
struct Holders {
    release: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Holders {
    fn new() -> Self {
        let (release, _) = watch::channel(false);
        Self { release, tasks: Vec::new() }
    }

    /// Starts `count` jobs and returns where each was placed, once all hold
    /// their lock: (shard, backend pid).
    async fn start(&mut self, db: &Arc<Database>, count: usize) -> Vec<(usize, i32)> {
        let (tell, mut placed) = mpsc::unbounded_channel();
        for _ in 0..count {
            let (db, tell, mut release) = (db.clone(), tell.clone(), self.release.subscribe());
            self.tasks.push(pinlock::shard::spawn(async move {
                let job = db.job_session();
                job.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await.expect("granted").expect("free");
                let pid = job.backend_pid().await.expect("a session");
                tell.send((pinlock::shard::current(), pid)).expect("the test listens");
                let _ = release.wait_for(|&go| go).await;
                job.release_all().await;
            }));
        }
        let mut all = Vec::new();
        while all.len() < count {
            all.push(placed.recv().await.expect("a holder placed its job"));
        }
        all
    }

    async fn finish(self) {
        self.release.send_replace(true);
        for task in self.tasks {
            task.await.expect("a holder task");
        }
    }
}

#[test]
fn jobs_pack_onto_their_shards_sessions_and_spread_past_the_bound() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    pinlock::shard::start(runtime.handle().clone(), 2).expect("shards");
    assert_eq!(pinlock::shard::count(), 2);
    runtime.block_on(async {
        // Room for a session per shard, two jobs each: each shard packs its
        // own jobs onto a session of its own.
        let db = database_with(DbSettings {
            max_sessions: 5,
            shared_sessions: 4,
            jobs_per_shared_session: 2,
            ..DbSettings::default()
        })
        .await;
        let mut holders = Holders::new();
        let placed = holders.start(&db, 4).await;
        let mut by_shard: HashMap<usize, HashSet<i32>> = HashMap::new();
        for (shard, pid) in placed {
            by_shard.entry(shard).or_default().insert(pid);
        }
        assert_eq!(by_shard.len(), 2, "jobs ran on both shards: {by_shard:?}");
        assert!(by_shard.values().all(|pids| pids.len() == 1), "one session per shard: {by_shard:?}");
        assert!(by_shard[&0].is_disjoint(&by_shard[&1]), "no session shared across shards: {by_shard:?}");
        holders.finish().await;

        // The bound reached unevenly: shard 0 opened two of the three shared
        // sessions, shard 1 one, and each takes one job. Six more jobs, three
        // per shard, spread over all three (three jobs on each session);
        // kept on its own shard's session, shard 1's would pile onto its one.
        let db = database_with(DbSettings {
            max_sessions: 4,
            shared_sessions: 3,
            jobs_per_shared_session: 1,
            ..DbSettings::default()
        })
        .await;
        let mut first = Vec::new();
        let mut tenants: HashMap<i32, usize> = HashMap::new();
        for _ in 0..2 {
            let job = db.job_session();
            job.try_acquire(Uuid::new_v4(), LockMode::Exclusive).await.expect("granted").expect("free");
            *tenants.entry(job.backend_pid().await.expect("a session")).or_default() += 1;
            first.push(job);
        }
        // Shards take spawns in turn: four so far, so a no-op lands on shard
        // 0 and the next holder on shard 1.
        pinlock::shard::spawn(async {}).await.expect("no-op");
        let mut holders = Holders::new();
        let on_shard_1 = holders.start(&db, 1).await;
        assert_eq!(on_shard_1[0].0, 1, "the third session opened on shard 1");
        *tenants.entry(on_shard_1[0].1).or_default() += 1;
        assert_eq!(tenants.len(), 3, "three shared sessions: {tenants:?}");
        for (_, pid) in holders.start(&db, 6).await {
            *tenants.entry(pid).or_default() += 1;
        }
        assert_eq!(tenants.len(), 3, "no fourth session: {tenants:?}");
        assert!(tenants.values().all(|&jobs| jobs == 3), "jobs per session: {tenants:?}");
        holders.finish().await;
        for job in first {
            job.release_all().await;
        }
    });
}
