//! `pinlock run`: N jobs of one worker, C at a time, then a summary (text or
//! JSON). Ctrl-C stops the jobs; each still releases its locks.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use pinlock::batch::Batch;
use pinlock::db::Database;
use pinlock::report::SummaryBuilder;
use pinlock::runtime::Runtime;

use crate::config::Settings;

/// Arguments of `pinlock run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The worker component (.wasm built for wasm32-wasip2).
    pub component: PathBuf,
    /// How many jobs to run.
    #[arg(long, default_value_t = 1)]
    pub jobs: u64,
    /// How many jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Input of every job (JSON text, passed as bytes).
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print each job's output (or error) on its own line.
    #[arg(long)]
    pub print_outputs: bool,
}

/// Runs the command; exit code 1 when any job failed.
pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    serde_json::from_str::<serde_json::Value>(&args.input).context("--input is not valid JSON")?;
    let runtime = Arc::new(Runtime::new(settings.runtime_settings(args.concurrency))?);
    let worker =
        Arc::new(runtime.load_file(&args.component).with_context(|| format!("loading {}", args.component.display()))?);
    let db = Database::new(settings.db_config()?, settings.db_settings());
    db.migrate().await?;

    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping jobs (their locks are released)");
            on_interrupt.cancel();
        }
    });
    let progress = (std::io::stderr().is_terminal() && args.jobs >= 100).then(|| {
        let bar = ProgressBar::new(args.jobs);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {per_sec} eta {eta}") {
            bar.set_style(style);
        }
        bar
    });

    let input = args.input.clone().into_bytes();
    let batch = Batch {
        runtime,
        worker,
        db,
        jobs: args.jobs,
        concurrency: args.concurrency,
        input: Arc::new(move |_| input.clone()),
        cancel,
    };
    let started = Instant::now();
    let mut summary = SummaryBuilder::default();
    let mut stdout = std::io::stdout().lock();
    batch
        .run(|outcome| {
            summary.add(&outcome);
            if let Some(bar) = &progress {
                bar.inc(1);
            }
            if args.print_outputs {
                let line = match &outcome.result {
                    Ok(output) => String::from_utf8_lossy(output).into_owned(),
                    Err(e) => format!("error: {e}"),
                };
                let _ = writeln!(stdout, "{line}");
            }
        })
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let summary = summary.finish(started.elapsed());
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
    } else {
        writeln!(stdout, "{summary}")?;
    }
    Ok(if summary.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
