//! The `pinlock` binary's own commands: `locks` shows who holds what, with
//! entities; errors are clear and never show a password; `new` writes a
//! worker crate that builds and runs; `--threads` sets the host's shards.

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

// --------------------------------------------------------------- pinlock new

/// `pinlock new` refuses names cargo would refuse (or that clash) and a
/// directory that is not empty, and writes nothing then.
#[test]
fn new_refuses_bad_names_and_non_empty_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, says) in [
        ("1counter", "must start with an ASCII letter"),
        ("my counter", "is not allowed"),
        ("a/b", "is not allowed"),
        ("fn", "reserved"),
        ("test", "reserved"),
    ] {
        let output = pinlock().args(["new", name]).current_dir(dir.path()).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name:?} accepted");
        assert!(stderr.contains(says), "{name:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "nothing written");

    std::fs::create_dir(dir.path().join("taken")).expect("mkdir");
    std::fs::write(dir.path().join("taken/notes.txt"), "mine").expect("write");
    let output = pinlock().args(["new", "taken"]).current_dir(dir.path()).output().expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("already exists and is not empty"), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.path().join("taken/notes.txt")).expect("kept"), "mine");

    // An empty directory is fine, and `--path` names it.
    std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
    let output = pinlock().args(["new", "ok-name", "--path", "empty"]).current_dir(dir.path()).output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("empty/src/lib.rs").is_file());
}

/// The crate `pinlock new` writes builds as it is for wasm32-wasip2 and runs
/// with `pinlock run`: four jobs at once on one counter, each a locked
/// read-modify-write, count 1 to 4 with no update lost. The build's target dir
/// is `target/new-worker-test`, kept between runs (a cold one takes a minute).
#[test]
fn a_new_worker_builds_and_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = pinlock().args(["new", "my-counter"]).current_dir(dir.path()).output().expect("run pinlock new");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("cargo build --release --target wasm32-wasip2"), "{stdout}");
    let krate = dir.path().join("my-counter");
    for file in ["Cargo.toml", "src/lib.rs", "README.md", ".cargo/config.toml", "rust-toolchain.toml"] {
        assert!(krate.join(file).is_file(), "{file} written");
    }
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains(r#"crate-type = ["cdylib"]"#), "{manifest}");

    // The workspace's lock file: the versions already downloaded and built,
    // so the build needs no registry and reuses the cache.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    std::fs::copy(workspace.join("Cargo.lock"), krate.join("Cargo.lock")).expect("copy Cargo.lock");
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", workspace.join("target").join("new-worker-test"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("run cargo build");
    assert!(build.status.success(), "the new crate does not build:\n{}", String::from_utf8_lossy(&build.stderr));
    let wasm = workspace.join("target/new-worker-test/wasm32-wasip2/release/my_counter.wasm");
    assert!(wasm.is_file(), "{} built", wasm.display());

    let counter = format!("new-worker-test-{}", Uuid::new_v4());
    let input = serde_json::json!({ "counter": counter }).to_string();
    let run = pinlock()
        .arg("run")
        .arg(&wasm)
        .args(["--jobs", "4", "--concurrency", "4", "--input", &input, "--print-outputs"])
        .env("DATABASE_URL", database_url())
        .output()
        .expect("run pinlock run");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let mut values: Vec<u64> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["counter"] == Value::String(counter.clone()))
        .map(|v| v["value"].as_u64().expect("value"))
        .collect();
    values.sort();
    assert_eq!(values, [1, 2, 3, 4], "{stdout}");
}

/// `--threads` sets the shards: one thread runs everything, N runs N (the
/// main thread and N - 1 shard threads); jobs succeed either way, and 0 is
/// refused. The shard threads are counted by name while a job holds a lock,
/// so each run shows how many it had.
#[test]
fn threads_sets_the_shards_and_jobs_run_on_any() {
    let bench = guest_path("pinlock_test_bench.wasm");
    let input = serde_json::json!({"op": "hold", "entities": [Uuid::new_v4()], "hold_ms": 1000}).to_string();
    for (threads, others) in [("1", 0), ("3", 2)] {
        let child = pinlock()
            .args(["--threads", threads, "run", &bench, "--jobs", "2", "--concurrency", "2", "--input", &input])
            .env("DATABASE_URL", database_url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run pinlock run");
        std::thread::sleep(std::time::Duration::from_millis(700));
        let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id())).expect("the process's threads");
        let named_worker = |task: &std::fs::DirEntry| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|name| name.starts_with("pinlock-shard-"))
        };
        let seen = tasks.filter_map(Result::ok).filter(|task| named_worker(task)).count();
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "--threads {threads}: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(seen, others, "shard threads beside the main one with --threads {threads}");
    }
    let zero = pinlock().args(["--threads", "0", "locks"]).env("DATABASE_URL", database_url()).output().expect("run");
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--threads"), "{}", String::from_utf8_lossy(&zero.stderr));
}
