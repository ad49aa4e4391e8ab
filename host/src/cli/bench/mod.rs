//! `pinlock bench`: pinlock measured against raw PostgreSQL (the floor) in the
//! same run, so that the machine's noise lands on both. Seven scenarios, one
//! file each (the seventh, the job queue, compares `pinlock serve` with
//! `pinlock run` instead); the floor, the pinlock host, statistics, the machine facts and
//! the report have a file each too.
//!
//! Every entity is a fresh random UUID and every floor key a random bigint in
//! [2^62, 2^63), which pinlock's entity keys (an identity counting from 1)
//! never reach: nothing collides with other users of the database. Warm-ups
//! are never recorded. The targets are reported, not asserted: the command
//! fails only when something could not run.

mod floor;
mod handoff;
mod harness;
mod held;
mod machine;
mod mapping;
mod overhead;
mod plan;
mod queue;
mod report;
mod stats;
mod throughput;
mod uncontended;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use crate::config::Settings;
use floor::FloorConn;
use harness::Host;
use machine::Machine;
use plan::Plan;
use report::{Results, RunSettings};

/// Arguments of `pinlock bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A short run (well under a minute), for CI.
    #[arg(long)]
    pub quick: bool,
    /// Print every figure as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,
    /// Run only this scenario (1–7; repeat for several). Default: all.
    #[arg(long = "scenario", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=7))]
    pub scenarios: Vec<u8>,
}

/// Runs every scenario and prints the table (or JSON).
pub async fn run(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(args.quick);
    let config = settings.db_config()?;
    let app = config.application_name().to_owned();
    let runtime_settings = settings.runtime_settings(plan.max_concurrent_jobs());
    let run_settings = RunSettings {
        database: config.display_target(),
        application_name: app.clone(),
        max_sessions: settings.max_sessions,
        lock_timeout_ms: settings.lock_timeout_ms,
        time_limit_ms: settings.time_limit_ms,
        memory_limit_mib: settings.memory_limit_mib,
        max_concurrent_jobs: runtime_settings.max_concurrent_jobs as usize,
        threads: settings.threads,
        release_build: !cfg!(debug_assertions),
    };
    let host = Host::new(config.clone(), settings.db_settings(), runtime_settings)?;
    host.database(1).migrate().await.context("preparing the database")?;
    let machine = Machine::describe(&FloorConn::connect(&config, &app, "info").await?).await?;
    eprintln!("pinlock bench: {} cores, {}; {}", machine.cores, machine.cpu_model, machine.postgres);

    // On a worker thread, like every job of a batch (the main thread only
    // waits), so that neither side pays for hops to and from it.
    let chosen = Chosen(args.scenarios);
    let running = tokio::spawn(scenarios(host, plan, app, machine, run_settings, chosen));
    let results = running.await.context("the bench task panicked")??;
    if let Some(path) = &args.save {
        let json = serde_json::to_vec_pretty(&results)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    } else {
        print!("{}", report::render(&results));
    }
    Ok(ExitCode::SUCCESS)
}

/// The scenarios asked for (`--scenario`; none named: all).
struct Chosen(Vec<u8>);

impl Chosen {
    /// Runs `scenario` (a future not yet started) if scenario `n` was
    /// chosen, announcing it; `None` when it was not.
    async fn run<T>(
        &self,
        n: u8,
        name: &str,
        scenario: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<Option<T>> {
        if !self.0.is_empty() && !self.0.contains(&n) {
            return Ok(None);
        }
        eprintln!("pinlock bench: scenario {n}, {name}");
        scenario.await.with_context(|| format!("scenario {n} ({name})")).map(Some)
    }
}

/// Runs the chosen scenarios in order and gathers their figures.
async fn scenarios(
    host: Host,
    plan: Plan,
    app: String,
    machine: Machine,
    settings: RunSettings,
    chosen: Chosen,
) -> anyhow::Result<Results> {
    let started = Instant::now();
    let uncontended = chosen.run(1, "uncontended latency", uncontended::run(&host, &plan, &app)).await?;
    let throughput = chosen.run(2, "throughput", throughput::run(&host, &plan, &app)).await?;
    let handoff = chosen.run(3, "contended hand-off", handoff::run(&host, &plan, &app)).await?;
    let overhead = chosen.run(4, "job overhead", overhead::run(&host, &plan, machine.cores)).await?;
    let held = chosen.run(5, "many held locks", held::run(&host, &plan, &app)).await?;
    let mapping = chosen.run(6, "entity mapping", mapping::run(&host, &plan)).await?;
    let queue = chosen.run(7, "job queue", queue::run(&host, &plan, &app)).await?;
    let mut results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        targets: Vec::new(),
        machine,
        settings,
        plan,
        uncontended,
        throughput,
        handoff,
        overhead,
        held,
        mapping,
        queue,
        wall_secs: started.elapsed().as_secs_f64(),
    };
    results.targets = report::check_targets(&results);
    Ok(results)
}
