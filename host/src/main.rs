//! The `pinlock` command: parse flags, pick a command, report errors.

mod cli;
mod config;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a job allocates and frees many
/// small objects (its store, futures, statements, rows), and the bench's
/// throughput rose 4–8 % with it (BENCHMARKS.md, "Issue 8, eighth pass").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run sandboxed WebAssembly jobs that hold distributed locks on PostgreSQL.
#[derive(Parser)]
#[command(name = "pinlock", version, about)]
struct Cli {
    #[command(flatten)]
    settings: config::Settings,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run N jobs of a worker component, C at a time, and summarize them.
    Run(cli::run::RunArgs),
    /// Show what locks do: the inventory example with and without locks.
    Demo(cli::demo::DemoArgs),
    /// List the advisory locks held and awaited in the database right now.
    Locks(cli::locks::LocksArgs),
    /// Measure pinlock against raw PostgreSQL, in the same run.
    Bench(cli::bench::BenchArgs),
    /// Run the service: the job queue, the HTTP API, probes and metrics.
    Serve(cli::serve::ServeArgs),
    /// Submit a job to a running server.
    Submit(cli::client::SubmitArgs),
    /// List a server's jobs.
    Jobs(cli::client::JobsArgs),
    /// Write a new worker crate (builds with `cargo build --release --target wasm32-wasip2`).
    New(cli::new::NewArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A service says what it does (info); one-shot commands only what went wrong.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // `PINLOCK_LOG_FORMAT=json`: one JSON object per line, span fields (job id, worker) included.
    if std::env::var("PINLOCK_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match cli.settings.async_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run::run(&cli.settings, args).await,
            Command::Demo(args) => cli::demo::run(&cli.settings, args).await,
            Command::Locks(args) => cli::locks::run(&cli.settings, args).await,
            Command::Bench(args) => cli::bench::run(&cli.settings, args).await,
            Command::Serve(args) => cli::serve::run(&cli.settings, args).await,
            Command::Submit(args) => cli::client::submit(args).await,
            Command::Jobs(args) => cli::client::jobs(args).await,
            Command::New(args) => cli::new::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
