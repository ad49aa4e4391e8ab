//! The `pinlock` binary's own commands: `locks` shows who holds what, with
//! entities; errors are clear and never show a password.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;
use uuid::Uuid;

fn pinlock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pinlock"));
    command.env("RUST_LOG", "off");
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_lists_holders_and_waiters_with_their_entity() {
    let db = database().await;
    let holder = db.job_session();
    let entity = Uuid::new_v4();
    let grant = holder.acquire(entity, pinlock::db::LockMode::Shared, None).await.expect("hold");
    let pid = holder.backend_pid().await.expect("pid");
    let output = pinlock().args(["locks", "--json"]).env("DATABASE_URL", database_url()).output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    let mine = rows
        .iter()
        .find(|r| r["entity"] == Value::String(entity.to_string()))
        .unwrap_or_else(|| panic!("entity not listed in {rows:?}"));
    assert_eq!(mine["pid"], pid);
    assert_eq!(mine["mode"], "ShareLock");
    assert_eq!(mine["granted"], true);
    assert_eq!(mine["key"], grant.key);
    assert_eq!(mine["application"], "pinlock-test");

    let table = pinlock().arg("locks").env("DATABASE_URL", database_url()).output().expect("run");
    assert!(String::from_utf8_lossy(&table.stdout).contains(&entity.to_string()));
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let output = pinlock()
        .args(["locks"])
        .env("DATABASE_URL", "postgres://postgres:s3cret-pw@127.0.0.1:1/test")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL at postgres@127.0.0.1:1/test"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "the password leaked: {stderr}");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let output = pinlock().arg("run").arg(&path).env("DATABASE_URL", database_url()).output().expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a component"), "{stderr}");
}

/// With no database given and `--throwaway-db`, the demo initdb's its own
/// cluster (as the postgres user when root), runs, and removes it.
#[test]
fn the_demo_runs_on_a_throwaway_cluster_and_is_exact() {
    let output = pinlock()
        .args(["demo", "--throwaway-db", "--stock", "20", "--orders", "30", "--concurrency", "8"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("with locks     sold   20, refused   10, stock left    0"), "{stdout}");
    assert!(stdout.contains("starting a throwaway PostgreSQL cluster"), "{stdout}");
}
