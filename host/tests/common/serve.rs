//! `pinlock serve` on real parts, for the tests that start hosts
//! (`serve.rs`, `dashboard.rs`): a fresh database per test, real
//! `pinlock serve` processes killed when their guard drops, and a blocking
//! HTTP client. Hosts print `pinlock serve: listening on http://ADDR as
//! HOST` once ready; the harness reads the port from that line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls, Row};
use uuid::Uuid;

use super::{LockRow, database_url, guest_path, key_of, locks_on};

/// Longest a host may take to print its address (compiling the guest on a
/// busy 2-core machine included).
pub const START_LIMIT: Duration = Duration::from_secs(60);
/// Longest one HTTP request may take.
pub const HTTP_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The database of one test.

/// A fresh database on the test server, with an observer session on it;
/// dropped (WITH (FORCE)) when the guard drops.
pub struct TestDb {
    pub name: String,
    /// libpq string for the hosts (the last `dbname=` wins).
    pub url: String,
    pub rt: tokio::runtime::Runtime,
    pub observer: Option<Client>,
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to the test server");
    tokio::spawn(connection);
    client
}

impl TestDb {
    pub fn create() -> Self {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
        let name = format!("pinlock_serve_{}", Uuid::new_v4().simple());
        let url = format!("{} dbname={name}", database_url());
        let observer = rt.block_on(async {
            let admin = connect(&database_url()).await;
            admin.execute(&format!("CREATE DATABASE {name}"), &[]).await.expect("create the test's database");
            connect(&url).await
        });
        Self { name, url, rt, observer: Some(observer) }
    }

    pub fn observer(&self) -> &Client {
        self.observer.as_ref().expect("observer")
    }

    pub fn rows(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Vec<Row> {
        self.rt.block_on(self.observer().query(sql, params)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.rows(sql, params)[0].get(0)
    }

    /// Every job in the queue.
    pub fn jobs(&self) -> i64 {
        self.count("SELECT count(*) FROM pinlock.jobs", &[])
    }

    /// The advisory key of `entity` (mapped if new).
    pub fn key(&self, entity: Uuid) -> i64 {
        self.rt.block_on(key_of(self.observer(), entity))
    }

    /// Who holds or awaits the advisory key `key`.
    pub fn locks(&self, key: i64) -> Vec<LockRow> {
        self.rt.block_on(locks_on(self.observer(), key))
    }

    /// Advisory locks held or awaited by backends of host `host`.
    pub fn advisory_locks_of(&self, host: &str) -> i64 {
        self.count(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND a.application_name = $1
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&host],
        )
    }

    /// `now() + interval` as RFC 3339 text.
    pub fn timestamp_in(&self, interval: &str) -> String {
        self.rows("SELECT to_json(clock_timestamp() + $1::text::interval) #>> '{}'", &[&interval])[0].get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop(self.observer.take());
        let name = self.name.clone();
        let dropped = self.rt.block_on(async move {
            let admin = connect(&database_url()).await;
            admin.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[]).await
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------
// Hosts: real `pinlock serve` processes.

/// A child process that is killed (and reaped) when dropped.
pub struct Guarded {
    pub child: Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Guarded {
    pub fn spawn(command: &mut Command) -> (Self, Option<std::process::ChildStdout>) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pinlock serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut kept) = stderr.lock() {
                        if kept.len() >= 300 {
                            kept.remove(0);
                        }
                        kept.push(line);
                    }
                }
            });
        }
        let stdout = child.stdout.take();
        (Self { child, stderr }, stdout)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One running `pinlock serve`.
pub struct Host {
    pub name: String,
    pub base: String,
    pub process: Guarded,
}

impl Host {
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base, None)
    }

    /// Sends SIGTERM (a drain).
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill9(&mut self) {
        self.process.child.kill().expect("kill -9");
        let _ = self.process.child.wait();
    }
}

/// Every process started with the same arguments: no stray environment.
pub fn pinlock_serve(db_url: &str, host: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pinlock"));
    command.arg("serve").args(["--database-url", db_url, "--host-id", host]);
    for var in [
        "DATABASE_URL",
        "PINLOCK_CONFIG",
        "PINLOCK_LISTEN",
        "PINLOCK_TOKENS",
        "PINLOCK_MAX_JOBS",
        "PINLOCK_DRAIN_GRACE_SECS",
        "PINLOCK_LEASE_SECS",
        "PINLOCK_CACHE_DIR",
        "PINLOCK_HOST_ID",
    ] {
        command.env_remove(var);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Compiled components shared by every host of every run (content-hashed,
/// so never stale), to keep starts fast.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-compile-cache")
}

/// Starts `command` and waits for its "listening on" line.
pub fn start_host(name: &str, command: &mut Command) -> Host {
    let (process, stdout) = Guarded::spawn(command);
    let (tx, rx) = mpsc::channel();
    let stdout = stdout.expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_LIMIT;
    let mut process = process;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("pinlock serve: listening on http://") {
                    let (addr, as_host) = rest.split_once(" as ").expect("`ADDR as HOST`");
                    assert_eq!(as_host, name, "the host says who it is");
                    assert!(addr.starts_with("127.0.0.1:"), "loopback only: {addr}");
                    return Host { name: name.to_owned(), base: format!("http://{addr}"), process };
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("host {name} exited ({status}) before listening:\n{}", process.stderr());
        }
        assert!(Instant::now() < deadline, "host {name} did not listen within {START_LIMIT:?}:\n{}", process.stderr());
    }
}

/// Host names unique within this test binary.
pub fn host_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("serve-test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A configuration serving the scripted fixture as `scripted`, with extra
/// lines in `[server]`, `[queue]` and `[workers.scripted]`.
pub fn config(server: &str, queue: &str, worker: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[queue]\n{queue}\n\n[workers.scripted]\ncomponent = {:?}\n{worker}\n",
        guest_path("pinlock_test_scripted.wasm")
    )
}

/// One test's world. Fields drop in order: the hosts are killed before the
/// database is dropped, and the folder goes last.
pub struct Fixture {
    pub hosts: Vec<Host>,
    pub db: TestDb,
    pub config: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(config_text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("pinlock.toml");
        std::fs::write(&config, config_text).expect("write pinlock.toml");
        Self { hosts: Vec::new(), db: TestDb::create(), config, _dir: dir }
    }

    /// Starts `n` hosts on the configuration at once; returns their indexes.
    pub fn start(&mut self, n: usize) -> Vec<usize> {
        let names: Vec<String> = (0..n).map(|_| host_name()).collect();
        // Spawn them all, then wait for each: they start in parallel.
        let started: Vec<Host> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .iter()
                .map(|name| {
                    let mut command = pinlock_serve(&self.db.url, name);
                    command.arg("--config").arg(&self.config).arg("--cache-dir").arg(cache_dir());
                    scope.spawn(move || start_host(name, &mut command))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("host started")).collect()
        });
        let first = self.hosts.len();
        self.hosts.extend(started);
        (first..self.hosts.len()).collect()
    }
}

// ---------------------------------------------------------------------------
// HTTP.

/// A blocking JSON client for one host.
pub struct Api {
    pub agent: ureq::Agent,
    pub base: String,
    pub token: Option<String>,
}

/// An HTTP answer: status, body as JSON (or a JSON string of the text).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an API error: {} {}", self.status, self.text))
    }
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        let agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(HTTP_LIMIT)).build().into();
        Self { agent, base: base.to_owned(), token: token.map(str::to_owned) }
    }

    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self::new(&self.base, token)
    }

    pub fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Answer {
        let mut response = result.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("{what}: reading: {e}"));
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Answer { status, body, text }
    }

    pub fn get(&self, path: &str) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::answer(request.call(), &format!("GET {path}"))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Answer {
        let mut request = self.agent.post(format!("{}{path}", self.base)).content_type("application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::answer(request.send(body), &format!("POST {path}"))
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(path, &body.to_string())
    }

    /// Submits a job of `scripted` running `steps`, with `extra` fields.
    pub fn submit(&self, steps: Value, extra: Value) -> i64 {
        let mut body = json!({ "worker": "scripted", "input": { "steps": steps } });
        if let Value::Object(extra) = extra {
            body.as_object_mut().expect("object").extend(extra);
        }
        let answer = self.post("/v1/jobs", &body);
        assert_eq!(answer.status, 202, "submit: {}", answer.text);
        answer.body["id"].as_i64().unwrap_or_else(|| panic!("submit answered no id: {}", answer.text))
    }

    pub fn job(&self, id: i64) -> Value {
        let answer = self.get(&format!("/v1/jobs/{id}"));
        assert_eq!(answer.status, 200, "GET job {id}: {}", answer.text);
        answer.body
    }

    /// Polls job `id` until it is in `state` (at most `limit`).
    pub fn wait_state(&self, id: i64, state: &str, limit: Duration) -> Value {
        wait_for(limit, &format!("job {id} to be {state}"), || {
            let job = self.job(id);
            if job["state"] == state {
                return Ok(job);
            }
            let finished = ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""));
            assert!(!finished, "job {id} ended {} while waiting for {state}: {job}", job["state"]);
            Err(job.to_string())
        })
    }
}

/// Polls `check` until it answers `Ok` (at most `limit`); the last `Err`
/// explains a timeout.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => {
                assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}; last: {last}")
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
