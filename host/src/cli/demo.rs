//! `pinlock demo`: the inventory example run concurrently twice against one
//! stock — with locks (exact, never oversold) and without (lost updates,
//! oversold) — and the lock latency. Needs no file: the worker is embedded.
//! With no server at the default address it starts a throwaway cluster.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use pinlock::batch::Batch;
use pinlock::db::{Database, DbConfig};
use pinlock::report::{Summary, SummaryBuilder, human_us};
use pinlock::runtime::{Runtime, Worker};
use pinlock::scratch::ScratchCluster;
use pinlock::server::workers::embedded;

use crate::config::Settings;

/// Arguments of `pinlock demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Units in stock at the start.
    #[arg(long, default_value_t = 100)]
    pub stock: u64,
    /// Orders of one unit each.
    #[arg(long, default_value_t = 150)]
    pub orders: u64,
    /// Orders processed at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Always run against a throwaway cluster (needs PostgreSQL server binaries).
    #[arg(long)]
    pub throwaway_db: bool,
}

/// What one round (locked or not) did.
struct Round {
    sold: u64,
    refused: u64,
    left: u64,
    summary: Summary,
}

/// Runs the demo; exit code 1 if the locked round was not exact. Ctrl-C
/// stops it cleanly (a throwaway cluster is stopped and removed).
pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (config, cluster) = database(settings, args.throwaway_db).await?;
    let result = tokio::select! {
        result = rounds(settings, &args, config) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(cluster);
    result
}

async fn rounds(settings: &Settings, args: &DemoArgs, config: DbConfig) -> anyhow::Result<ExitCode> {
    let runtime = Arc::new(Runtime::new(settings.runtime_settings(args.concurrency))?);
    let inventory = embedded("inventory").context("the inventory example is not embedded in this build")?;
    let worker = Arc::new(runtime.load(inventory)?);
    let db = Database::new(config, settings.db_settings());
    db.migrate().await.context("preparing the database")?;
    println!(
        "pinlock demo: {} orders of 1 unit against {} in stock, {} jobs at a time\n  database {}\n",
        args.orders,
        args.stock,
        args.concurrency,
        db.target()
    );

    let locked = round(&runtime, &worker, &db, args, false).await?;
    let unlocked = round(&runtime, &worker, &db, args, true).await?;
    let exact = locked.sold + locked.left == args.stock;
    println!(
        "  with locks     sold {:>4}, refused {:>4}, stock left {:>4}  {}",
        locked.sold,
        locked.refused,
        locked.left,
        if exact { "correct: never oversold, stock exact" } else { "WRONG: the locks did not hold" }
    );
    let lost = (unlocked.sold + unlocked.left).saturating_sub(args.stock);
    let oversold = unlocked.sold.saturating_sub(args.stock);
    println!(
        "  without locks  sold {:>4}, refused {:>4}, stock left {:>4}  {}",
        unlocked.sold,
        unlocked.refused,
        unlocked.left,
        if lost > 0 {
            format!("wrong: {lost} updates lost, oversold by {oversold}")
        } else {
            "no race this time (try more --orders or --concurrency)".into()
        }
    );
    let s = &locked.summary;
    println!(
        "\n  locked round: {} jobs in {:.2} s; lock hold p50 {} (the worker thinks 5 ms under the lock);\n  \
         lock wait p50 {} p99 {} ({} jobs queue for one product)\n\n  \
         next: write your own worker (README.md), measure with `pinlock bench`",
        s.jobs,
        s.wall_secs,
        human_us(s.lock_hold.p50_us),
        human_us(s.lock_wait.p50_us),
        human_us(s.lock_wait.p99_us),
        args.concurrency
    );
    Ok(if exact { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The configured database, or a throwaway one when nothing answers and no
/// database was named.
async fn database(settings: &Settings, throwaway: bool) -> anyhow::Result<(DbConfig, Option<ScratchCluster>)> {
    let config = settings.db_config()?;
    let unreachable = match throwaway {
        true => "a throwaway database was asked for".to_owned(),
        false => match config.ping().await {
            Ok(()) => return Ok((config, None)),
            Err(e) if settings.database_given() => {
                return Err(e).context("the database you named does not answer");
            }
            Err(e) => e.to_string(),
        },
    };
    let Some(bin) = ScratchCluster::find_server() else {
        bail!(
            "{unreachable}\nNo PostgreSQL answers at {} and no server binaries are installed to start one.\n\
             Point pinlock at a database: --database-url postgres://USER@HOST:5432/DB \
             (or DATABASE_URL, or PGHOST/PGPORT/PGUSER/PGDATABASE).",
            config.display_target()
        );
    };
    println!("{unreachable}: starting a throwaway PostgreSQL cluster from {}", bin.display());
    let cluster = ScratchCluster::start(&bin)?;
    let mut scratch = DbConfig::parse(&cluster.url)?;
    scratch.set_application_name(&settings.host_name());
    Ok((scratch, Some(cluster)))
}

/// Restocks a fresh product, runs the orders, reads what is left.
async fn round(
    runtime: &Arc<Runtime>,
    worker: &Arc<Worker>,
    db: &Arc<Database>,
    args: &DemoArgs,
    unlocked: bool,
) -> anyhow::Result<Round> {
    let product = Uuid::new_v4();
    single(runtime, worker, db, json!({"action": "restock", "product": product, "quantity": args.stock})).await?;
    let order = serde_json::to_vec(&json!({
        "action": "reserve", "product": product, "quantity": 1, "unlocked": unlocked
    }))?;
    let batch = Batch {
        runtime: runtime.clone(),
        worker: worker.clone(),
        db: db.clone(),
        jobs: args.orders,
        concurrency: args.concurrency,
        input: Arc::new(move |_| order.clone()),
        cancel: CancellationToken::new(),
    };
    let (mut sold, mut refused, mut errors) = (0, 0, Vec::new());
    let mut summary = SummaryBuilder::default();
    let started = Instant::now();
    batch
        .run(|outcome| {
            summary.add(&outcome);
            match outcome.result.map(|out| serde_json::from_slice::<Value>(&out)) {
                Ok(Ok(reply)) if reply["reserved"] == json!(true) => sold += 1,
                Ok(Ok(_)) => refused += 1,
                Ok(Err(e)) => errors.push(e.to_string()),
                Err(e) => errors.push(e.to_string()),
            }
        })
        .await;
    if let Some(first) = errors.first() {
        bail!("{} orders failed; first: {first}", errors.len());
    }
    let reply = single(runtime, worker, db, json!({"action": "stock", "product": product})).await?;
    let left = reply["stock"].as_u64().context("stock reply without a number")?;
    Ok(Round { sold, refused, left, summary: summary.finish(started.elapsed()) })
}

/// Runs one job and parses its JSON output.
async fn single(runtime: &Runtime, worker: &Worker, db: &Arc<Database>, input: Value) -> anyhow::Result<Value> {
    let job = db.job_session();
    let outcome = runtime.run_job(worker, job, &serde_json::to_vec(&input)?, &CancellationToken::new()).await;
    let output = outcome.result?;
    Ok(serde_json::from_slice(&output)?)
}
