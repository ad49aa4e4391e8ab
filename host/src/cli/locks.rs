//! `pinlock locks`: every advisory lock held or awaited in the database now.

use std::process::ExitCode;

use clap::Args;

use pinlock::db::list_advisory_locks;

use crate::config::Settings;

/// Arguments of `pinlock locks`.
#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Print one JSON object per lock instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the locks.
pub async fn run(settings: &Settings, args: LocksArgs) -> anyhow::Result<ExitCode> {
    let locks = list_advisory_locks(&settings.db_config()?).await?;
    if args.json {
        for lock in &locks {
            println!("{}", serde_json::to_string(lock)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if locks.is_empty() {
        println!("no advisory locks held or awaited");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<38} {:>12} {:<13} {:<8} {:>7}  HOLDER", "ENTITY", "KEY", "MODE", "STATE", "PID");
    for lock in &locks {
        let entity = match (lock.entity, lock.int4_pair) {
            (Some(entity), _) => entity.to_string(),
            (None, true) => "(int4 pair, not pinlock)".into(),
            (None, false) => "(not a pinlock entity)".into(),
        };
        let mode = if lock.mode == "ShareLock" { "shared" } else { "exclusive" };
        let state = if lock.granted { "held" } else { "waiting" };
        println!("{entity:<38} {:>12} {mode:<13} {state:<8} {:>7}  {}", lock.key, lock.pid, lock.application);
    }
    Ok(ExitCode::SUCCESS)
}
