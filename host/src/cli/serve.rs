//! `pinlock serve`: runs the service until SIGTERM/SIGINT, then drains (a
//! second signal stops at once, still releasing every lock).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use pinlock::db::DbConfig;
use pinlock::server::{ServeConfig, ServeTarget, Server};

use crate::config::Settings;

/// Arguments of `pinlock serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (TOML). Without one: the embedded examples on loopback.
    #[arg(long, env = "PINLOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long, env = "PINLOCK_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer tokens, comma-separated (overrides server.tokens).
    #[arg(long, env = "PINLOCK_TOKENS", hide_env_values = true, value_delimiter = ',')]
    pub tokens: Option<Vec<String>>,
    /// Jobs running at once on this host (overrides server.max_jobs).
    #[arg(long, env = "PINLOCK_MAX_JOBS")]
    pub max_jobs: Option<usize>,
    /// Drain grace period in seconds (overrides server.drain_grace_secs).
    #[arg(long, env = "PINLOCK_DRAIN_GRACE_SECS")]
    pub drain_grace_secs: Option<u64>,
    /// Lease of a running job in seconds (overrides queue.lease_secs).
    #[arg(long, env = "PINLOCK_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/pinlock or ~/.cache/pinlock).
    #[arg(long, env = "PINLOCK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile components at every start (no cache).
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs the server until a signal, then drains.
pub async fn run(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(tokens) = args.tokens {
        config.server.tokens = tokens.into_iter().filter(|t| !t.is_empty()).collect();
    }
    if let Some(max_jobs) = args.max_jobs {
        config.server.max_jobs = max_jobs;
    }
    if let Some(grace) = args.drain_grace_secs {
        config.server.drain_grace_secs = grace;
    }
    if let Some(lease) = args.lease_secs {
        config.queue.lease_secs = lease;
    }
    config.check()?;
    // Flag or DATABASE_URL, else the file, else the libpq variables.
    let mut db = match (&settings.database_url, &config.database.url) {
        (Some(url), _) | (None, Some(url)) => DbConfig::parse(url)?,
        (None, None) => DbConfig::from_pg_env()?,
    };
    let host_id = settings.host_name();
    db.set_application_name(&host_id);
    let cache_dir = (!args.no_cache).then(|| args.cache_dir.or_else(default_cache_dir)).flatten();
    let grace = Duration::from_secs(config.server.drain_grace_secs);
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;

    let server = Server::start(
        config,
        ServeTarget { db, host_id: host_id.clone(), cache_dir, db_settings: settings.db_settings() },
    )
    .await?;
    println!("pinlock serve: listening on http://{} as {host_id}", server.addr());
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    eprintln!("pinlock serve: draining (grace {grace:?}; a second signal stops at once)");
    let hurry = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    server.drain(grace, hurry).await;
    eprintln!("pinlock serve: stopped");
    Ok(ExitCode::SUCCESS)
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("pinlock"))
}
