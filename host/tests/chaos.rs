//! Chaos suite: pinlock fails closed. Several real `pinlock run` processes
//! append tokens to a few shared ledgers (the scripted guest's `append` step:
//! lock the ledger, read it, pause, write it back with one more token,
//! release) on a throwaway cluster of their own, while the test terminates
//! their backends, kills a host, restarts PostgreSQL or pauses a lock holder.
//!
//! The invariant: once the session under a job's locks is lost, nothing of
//! that job reaches the database until the guest acknowledged the loss, so a
//! key-value write that returned ok committed while the job's locks were
//! held. The checker reads the ledgers back and counts what a write made
//! without the lock leaves behind: two acknowledged jobs at the same ledger
//! position (duplicates), acknowledged tokens missing from their ledger (lost
//! updates), tokens twice in a ledger, and advisory locks left on the server.
//! Every fault scenario must show none of them, and must show that the fault
//! happened; the unlocked control run must show duplicates or lost updates
//! (proof that the checker sees them).
//!
//! Scenarios run one at a time (2 cores are enough), each on its own cluster;
//! `PINLOCK_CHAOS_ROUNDS` repeats each one for a soak. See docs/chaos.md.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use pinlock::db::{Database, DbConfig, DbSettings};
use pinlock::scratch::{ScratchCluster, ScratchOptions};
use rand::Rng;
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

/// Ledgers the jobs spread over: few, so that several hosts contend.
const LEDGERS: u64 = 4;
/// Lock wait limit of each append (a wait behind a paused holder ends when
/// its backend is terminated, well before this).
const LOCK_TIMEOUT_MS: u64 = 3000;
/// Longest a round may run, hosts started to hosts ended.
const ROUND_LIMIT: Duration = Duration::from_secs(90);
/// Longest hosts may take to print their first output (compiling the guest
/// on a busy machine included).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long advisory locks may linger after every host ended.
const LOCKS_GRACE: Duration = Duration::from_secs(5);

/// One scenario at a time: each starts a cluster and several hosts, and the
/// faults are timed, so they should not compete for the CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many rounds each scenario runs (`PINLOCK_CHAOS_ROUNDS`, default 2).
fn rounds() -> u32 {
    std::env::var("PINLOCK_CHAOS_ROUNDS").ok().and_then(|r| r.parse().ok()).filter(|&r| r > 0).unwrap_or(2)
}

/// The PostgreSQL server binaries, or `None` (loudly) to skip the suite.
fn server() -> Option<PathBuf> {
    let bin = ScratchCluster::find_server();
    if bin.is_none() {
        eprintln!(
            "\n*** chaos suite SKIPPED: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin \
             (install the PostgreSQL server to run it) ***\n"
        );
    }
    bin
}

/// A throwaway cluster for one scenario, on 127.0.0.1 only.
fn start_cluster(bin: &std::path::Path) -> ScratchCluster {
    let options = ScratchOptions { listen: vec!["127.0.0.1".into()], ..ScratchOptions::default() };
    tokio::task::block_in_place(|| ScratchCluster::start_with(bin, &options)).expect("start a scratch cluster")
}

// ---------------------------------------------------------------------------
// Hosts: real `pinlock run` processes.

/// What every host of a round runs.
#[derive(Debug, Clone, Copy)]
struct Load {
    hosts: usize,
    jobs: u64,
    concurrency: usize,
    /// Pause between read and write, under the lock.
    pause_ms: u64,
    /// A sleep before each append (bounds how fast jobs fail while the
    /// server is down).
    pace_ms: u64,
    unlocked: bool,
}

impl Load {
    fn input(&self, bucket: &str) -> String {
        let append = json!({
            "op": "append", "prefix": "ledger", "ledgers": LEDGERS, "bucket": bucket,
            "pause_ms": self.pause_ms, "unlocked": self.unlocked, "timeout_ms": LOCK_TIMEOUT_MS,
        });
        let steps = match self.pace_ms {
            0 => vec![append],
            ms => vec![json!({"op": "sleep", "ms": ms}), append],
        };
        json!({ "steps": steps }).to_string()
    }
}

/// One `pinlock run` process and what it printed so far (each stdout line
/// with the moment it was read).
struct Host {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    /// Killed by the test on purpose.
    killed: bool,
}

impl Host {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn printed(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().map(|l| l.clone()).unwrap_or_default();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    }
}

/// The hosts of one round; kills whatever still runs when dropped (a failed
/// assertion must not leave processes behind).
struct Fleet {
    url: String,
    input: String,
    load: Load,
    round: u32,
    hosts: Vec<Host>,
}

impl Fleet {
    fn new(url: &str, load: Load, bucket: &str, round: u32) -> Self {
        Self { url: url.to_owned(), input: load.input(bucket), load, round, hosts: Vec::new() }
    }

    /// Starts one more host (`chaos-<round>-<n>`); returns its index.
    fn spawn(&mut self) -> usize {
        let index = self.hosts.len();
        let name = format!("chaos-{}-{index}", self.round);
        let (jobs, concurrency) = (self.load.jobs.to_string(), self.load.concurrency.to_string());
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinlock"))
            .arg("run")
            .arg(guest_path("pinlock_test_scripted.wasm"))
            .args(["--jobs", &jobs, "--concurrency", &concurrency, "--input", &self.input, "--print-outputs"])
            .args(["--host-id", &name, "--database-url", &self.url])
            // Four jobs on two shared sessions (two more places for jobs
            // that wait for another host): the faults hit sessions that
            // carry several jobs' locks.
            .args(["--max-sessions", "4", "--shared-sessions", "2"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pinlock run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let readers = vec![
            {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines().map_while(Result::ok) {
                        if let Ok(mut lines) = lines.lock() {
                            lines.push((Instant::now(), line));
                        }
                    }
                })
            },
            {
                let stderr = stderr.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        if let Ok(mut kept) = stderr.lock() {
                            // The tail is enough to explain a failure.
                            if kept.len() >= 200 {
                                kept.remove(0);
                            }
                            kept.push(line);
                        }
                    }
                })
            },
        ];
        self.hosts.push(Host { name, child, lines, stderr, readers, status: None, killed: false });
        index
    }

    /// Records the exit of every host that ended; true when all have.
    fn all_ended(&mut self) -> bool {
        for host in &mut self.hosts {
            if host.status.is_none() {
                host.status = host.child.try_wait().expect("poll a host process");
            }
        }
        self.hosts.iter().all(|h| h.status.is_some())
    }

    /// Waits until every host printed a job's output (or ended), so that the
    /// faults hit running jobs, not start-up.
    async fn wait_started(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            self.all_ended();
            if self.hosts.iter().all(|h| h.printed() > 0 || h.status.is_some()) {
                return;
            }
            assert!(Instant::now() < deadline, "hosts did not start within {START_LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every host ended (at most until `deadline`), then joins
    /// the output readers.
    async fn wait_ended(&mut self, deadline: Instant) {
        while !self.all_ended() {
            assert!(Instant::now() < deadline, "hosts still running after {ROUND_LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for host in &mut self.hosts {
            for reader in host.readers.drain(..) {
                let _ = reader.join();
            }
        }
    }

    /// Kills host `index` with SIGKILL.
    fn kill(&mut self, index: usize) {
        let host = &mut self.hosts[index];
        host.child.kill().expect("kill -9 a host");
        host.status = Some(host.child.wait().expect("reap the killed host"));
        host.killed = true;
    }

    /// Every acknowledged append, every error result and every failed job.
    fn outputs(&self) -> Outputs {
        let mut outputs = Outputs::default();
        for (index, host) in self.hosts.iter().enumerate() {
            let lines = host.lines.lock().map(|l| l.clone()).unwrap_or_default();
            for (at, line) in lines {
                outputs.add(index, at, &line);
            }
        }
        outputs
    }

    /// Hosts that ended other than with success, unless killed on purpose.
    fn bad_exits(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| !h.killed && !h.status.is_some_and(|s| s.success()))
            .map(|h| format!("{} exited with {:?}; stderr:\n    {}", h.name, h.status, h.stderr_tail()))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if host.status.is_none() {
                // SIGKILL also ends a stopped process.
                let _ = host.child.kill();
                let _ = host.child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Outputs and the checker.

/// An `appended` result: the job's write returned ok.
#[derive(Debug, Clone)]
struct Ack {
    host: usize,
    at: Instant,
    ledger: String,
    token: String,
    position: u64,
    release: String,
}

#[derive(Debug, Default)]
struct Outputs {
    acks: Vec<Ack>,
    /// Error results by "code@step".
    errors: BTreeMap<String, usize>,
    /// Jobs that failed (`error: …` lines).
    failed: Vec<String>,
}

impl Outputs {
    fn add(&mut self, host: usize, at: Instant, line: &str) {
        if let Some(error) = line.strip_prefix("error: ") {
            self.failed.push(error.to_owned());
            return;
        }
        if !line.starts_with('{') {
            return; // the summary
        }
        let value: Value = serde_json::from_str(line).expect("job output is JSON");
        let result = value["results"].as_array().and_then(|r| r.last()).cloned().unwrap_or(Value::Null);
        if let Some(a) = result.get("appended") {
            self.acks.push(Ack {
                host,
                at,
                ledger: a["ledger"].as_str().expect("ledger").to_owned(),
                token: a["token"].as_str().expect("token").to_owned(),
                position: a["position"].as_u64().expect("position"),
                release: a["release"].as_str().unwrap_or("?").to_owned(),
            });
        } else if let Some(code) = result.get("err") {
            let code = code.as_str().map(str::to_owned).unwrap_or_else(|| code.to_string());
            *self.errors.entry(format!("{code}@{}", result["at"].as_str().unwrap_or("?"))).or_default() += 1;
        } else {
            panic!("unexpected job output: {line}");
        }
    }

    /// Jobs that learned their session was lost or the server was away: an
    /// error result with `lost` or `unavailable`, or a release that said `lost`.
    fn saw_loss(&self) -> usize {
        let errors: usize = self
            .errors
            .iter()
            .filter(|(k, _)| k.starts_with("lost@") || k.starts_with("unavailable@"))
            .map(|(_, n)| n)
            .sum();
        errors + self.acks.iter().filter(|a| a.release == "lost").count()
    }

    /// Jobs answered `lost` at their read or write: their lock was gone
    /// after they took it, and the fence kept them from the database.
    fn refused(&self) -> usize {
        ["lost@get", "lost@set"].iter().map(|k| self.errors.get(*k).copied().unwrap_or(0)).sum()
    }
}

/// What the checker found in the store and on the server.
#[derive(Debug, Default)]
struct Check {
    duplicates: usize,
    lost: usize,
    twice: usize,
    locks_left: i64,
    /// A few of the violations, spelled out.
    examples: Vec<String>,
}

impl Check {
    fn clean(&self) -> bool {
        self.duplicates == 0 && self.lost == 0 && self.twice == 0 && self.locks_left == 0
    }
}

/// Reads bucket `bucket` back and compares it with what was acknowledged;
/// counts the advisory locks left (waiting up to [`LOCKS_GRACE`] for them to go).
async fn check(url: &str, bucket: &str, acks: &[Ack]) -> Check {
    let client = connect(url).await;
    let rows =
        client.query("SELECT key, value FROM pinlock.kv WHERE bucket = $1", &[&bucket]).await.expect("read the store");
    let ledgers: HashMap<String, Vec<String>> = rows
        .iter()
        .map(|r| {
            let value: Vec<u8> = r.get(1);
            (r.get(0), serde_json::from_slice(&value).expect("a ledger is a JSON array of tokens"))
        })
        .collect();
    let mut check = Check::default();
    let note = |examples: &mut Vec<String>, what: String| {
        if examples.len() < 6 {
            examples.push(what);
        }
    };

    let mut at_position: HashMap<(&str, u64), Vec<&Ack>> = HashMap::new();
    for ack in acks {
        at_position.entry((&ack.ledger, ack.position)).or_default().push(ack);
    }
    for ((ledger, position), claims) in &at_position {
        if claims.len() > 1 {
            check.duplicates += claims.len() - 1;
            let tokens: Vec<&str> = claims.iter().map(|a| a.token.as_str()).collect();
            note(&mut check.examples, format!("{ledger} position {position} acknowledged to {tokens:?}"));
        }
    }
    for ack in acks {
        let present = ledgers.get(&ack.ledger).is_some_and(|l| l.contains(&ack.token));
        if !present {
            check.lost += 1;
            note(
                &mut check.examples,
                format!("{} (host {}, {} position {}) missing", ack.token, ack.host, ack.ledger, ack.position),
            );
        }
    }
    for (ledger, tokens) in &ledgers {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for token in tokens {
            *seen.entry(token).or_default() += 1;
        }
        for (token, n) in seen.into_iter().filter(|(_, n)| *n > 1) {
            check.twice += n - 1;
            note(&mut check.examples, format!("{token} {n} times in {ledger}"));
        }
    }

    let deadline = Instant::now() + LOCKS_GRACE;
    loop {
        check.locks_left = client
            .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", &[])
            .await
            .expect("count advisory locks")
            .get(0);
        if check.locks_left == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check
}

// ---------------------------------------------------------------------------
// The test's own sessions on the cluster.

/// A session of the test (named `observer`, which no fault targets); retries
/// for a while, the server may be restarting.
async fn connect(url: &str) -> Client {
    let url = format!("{url} application_name=observer");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to the scratch cluster: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Granted advisory locks held by sessions of `application_name`.
async fn held_by(client: &Client, application_name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
            &[&application_name],
        )
        .await
        .expect("read pg_locks")
        .get(0)
}

/// Whether a session of `application_name` holds an advisory lock and sits
/// idle after a read of the store: its job is between the read and the write
/// of an append (in its pause).
async fn mid_append(client: &Client, application_name: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1
                               AND a.state = 'idle' AND a.query ILIKE 'select%pinlock.kv%')",
            &[&application_name],
        )
        .await
        .expect("read pg_locks")
        .get(0)
}

/// Polls until sessions of `application_name` hold an advisory lock (at most
/// `limit`); whether they did.
async fn wait_holding(client: &Client, application_name: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if held_by(client, application_name).await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// Terminates every backend of `application_name`, waiting for each to exit
/// (so its locks are free); how many were terminated.
async fn terminate_all_of(client: &Client, application_name: &str) -> u64 {
    client
        .query(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
              WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await
        .expect("terminate backends")
        .iter()
        .filter(|r| r.get::<_, bool>(0))
        .count() as u64
}

/// A random delay in `lo..=hi` milliseconds.
fn jitter(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(lo..=hi))
}

// ---------------------------------------------------------------------------
// Rounds and faults.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// A random pinlock backend terminated every 20–50 ms.
    Terminate,
    /// One host killed with SIGKILL while it holds a lock; a replacement starts.
    Kill9,
    /// PostgreSQL restarted (immediate mode) mid-run.
    Restart,
    /// A host stopped (SIGSTOP) while one of its jobs holds a lock between
    /// its read and its write, its backends terminated, the others left to
    /// run, then resumed (SIGCONT).
    Pause,
}

/// What the fault injection did in one round.
#[derive(Debug, Default)]
struct Injected {
    terminated: u64,
    killed_holding: bool,
    replacement: Option<usize>,
    restarted_at: Option<Instant>,
    /// The stop window of the paused host (index 0).
    paused: Option<(Instant, Instant)>,
}

/// One round: the hosts' outputs, the check, and what was injected.
struct Round {
    outputs: Outputs,
    check: Check,
    injected: Injected,
    bad_exits: Vec<String>,
}

/// Starts the hosts on a fresh bucket, injects `fault` once they all run,
/// waits for them to end and checks the bucket.
async fn run_round(cluster: &ScratchCluster, scenario: &str, round: u32, load: Load, fault: Fault) -> Round {
    let bucket = format!("{scenario}-{round}");
    let mut fleet = Fleet::new(&cluster.url, load, &bucket, round);
    for _ in 0..load.hosts {
        fleet.spawn();
    }
    fleet.wait_started().await;
    let deadline = Instant::now() + ROUND_LIMIT;
    let observer = connect(&cluster.url).await;
    let mut injected = Injected::default();
    match fault {
        Fault::None => {}
        Fault::Terminate => {
            let mut observer = observer;
            while !fleet.all_ended() && Instant::now() < deadline {
                tokio::time::sleep(jitter(20, 50)).await;
                let victim = observer
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM (
                             SELECT pid FROM pg_stat_activity
                              WHERE application_name LIKE 'chaos-%' AND pid <> pg_backend_pid()
                              ORDER BY random() LIMIT 1) AS victim",
                        &[],
                    )
                    .await;
                match victim {
                    Ok(rows) => injected.terminated += rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64,
                    Err(_) => observer = connect(&cluster.url).await,
                }
            }
        }
        Fault::Kill9 => {
            tokio::time::sleep(jitter(300, 600)).await;
            let name = fleet.hosts[0].name.clone();
            injected.killed_holding = wait_holding(&observer, &name, Duration::from_secs(10)).await;
            fleet.kill(0);
            injected.replacement = Some(fleet.spawn());
        }
        Fault::Restart => {
            tokio::time::sleep(jitter(800, 1200)).await;
            tokio::task::block_in_place(|| cluster.restart("immediate")).expect("restart the scratch cluster");
            injected.restarted_at = Some(Instant::now());
        }
        Fault::Pause => {
            tokio::time::sleep(jitter(300, 600)).await;
            let (name, pid) = (fleet.hosts[0].name.clone(), fleet.hosts[0].pid());
            // Stop it while one of its jobs is between read and write under
            // its lock: look, stop, look again, resume and retry if the
            // moment passed.
            let give_up = Instant::now() + Duration::from_secs(15);
            while injected.paused.is_none() && Instant::now() < give_up && !fleet.all_ended() {
                if mid_append(&observer, &name).await {
                    signal("-STOP", pid);
                    if mid_append(&observer, &name).await {
                        let stopped_at = Instant::now();
                        injected.terminated = terminate_all_of(&observer, &name).await;
                        tokio::time::sleep(Duration::from_millis(1000)).await;
                        injected.paused = Some((stopped_at, Instant::now()));
                        signal("-CONT", pid);
                        continue;
                    }
                    signal("-CONT", pid);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    fleet.wait_ended(deadline).await;
    let outputs = fleet.outputs();
    let check = check(&cluster.url, &bucket, &outputs.acks).await;
    Round { outputs, check, injected, bad_exits: fleet.bad_exits() }
}

// ---------------------------------------------------------------------------
// The table.

/// One line of the table: a scenario over its rounds.
#[derive(Debug, Clone, Default)]
struct Row {
    scenario: String,
    runs: u32,
    acknowledged: usize,
    /// Jobs refused `lost` at their read or write, after their lock went:
    /// each one a write a host without the fence would have let through.
    refused: usize,
    errors: BTreeMap<String, usize>,
    duplicates: usize,
    lost: usize,
    twice: usize,
    locks_left: i64,
    fault: String,
    seconds: f64,
}

impl Row {
    fn add(&mut self, outputs: &Outputs, check: &Check) {
        self.runs += 1;
        self.acknowledged += outputs.acks.len();
        self.refused += outputs.refused();
        for (kind, n) in &outputs.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.duplicates += check.duplicates;
        self.lost += check.lost;
        self.twice += check.twice;
        self.locks_left = self.locks_left.max(check.locks_left);
    }
}

/// Adds `row` and prints every row so far (the last test to finish prints
/// the whole table).
fn report(row: Row) {
    static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());
    let mut rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
    rows.push(row);
    let mut table = String::from("\nchaos suite (fail closed)\n");
    table.push_str(&format!(
        "  {:<14} {:>4} {:>6} {:>7} {:>6} {:>5} {:>5} {:>5} {:>6} {:>7}  {}\n",
        "scenario", "runs", "acked", "refused", "errors", "dups", "lost", "twice", "locks", "time", "fault injected"
    ));
    for r in rows.iter() {
        table.push_str(&format!(
            "  {:<14} {:>4} {:>6} {:>7} {:>6} {:>5} {:>5} {:>5} {:>6} {:>6.1}s  {}\n",
            r.scenario,
            r.runs,
            r.acknowledged,
            r.refused,
            r.errors.values().sum::<usize>(),
            r.duplicates,
            r.lost,
            r.twice,
            r.locks_left,
            r.seconds,
            r.fault
        ));
    }
    table.push_str("  errors by kind (code@step):\n");
    for r in rows.iter().filter(|r| !r.errors.is_empty()) {
        let kinds: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        table.push_str(&format!("    {:<14} {}\n", r.scenario, kinds.join(", ")));
    }
    eprint!("{table}");
}

/// Runs a scenario's rounds on a cluster of its own, prints its row, and
/// returns every problem found (fail-closed violations, hosts that failed,
/// and what `fault_happened` says is missing), for the caller to assert on.
async fn scenario(
    name: &str,
    load: Load,
    fault: Fault,
    fault_happened: impl Fn(&Round, &mut Vec<String>),
) -> Option<(Row, Vec<String>)> {
    let bin = server()?;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let cluster = start_cluster(&bin);
    let mut row = Row { scenario: name.to_owned(), ..Row::default() };
    let mut problems = Vec::new();
    let (mut terminated, mut killed, mut restarts, mut paused) = (0, 0, 0, 0);
    for round in 0..rounds() {
        let result = run_round(&cluster, name, round, load, fault).await;
        row.add(&result.outputs, &result.check);
        terminated += result.injected.terminated;
        killed += usize::from(result.injected.replacement.is_some());
        restarts += usize::from(result.injected.restarted_at.is_some());
        paused += usize::from(result.injected.paused.is_some());
        let prefix = format!("{name} round {round}");
        if !load.unlocked && !result.check.clean() {
            problems.push(format!(
                "{prefix}: not fail-closed: {} duplicates, {} lost updates, {} tokens twice, {} locks left; e.g. {:?}",
                result.check.duplicates,
                result.check.lost,
                result.check.twice,
                result.check.locks_left,
                result.check.examples
            ));
        }
        if !result.outputs.failed.is_empty() {
            let failed = &result.outputs.failed;
            problems.push(format!("{prefix}: {} jobs failed, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]));
        }
        problems.extend(result.bad_exits.iter().map(|e| format!("{prefix}: {e}")));
        let mut missing = Vec::new();
        fault_happened(&result, &mut missing);
        problems.extend(missing.into_iter().map(|m| format!("{prefix}: fault did not happen as planned: {m}")));
    }
    row.fault = match fault {
        Fault::None => "none (no locks either)".into(),
        Fault::Terminate => format!("backends terminated: {terminated}"),
        Fault::Kill9 => format!("lock holders killed -9 and replaced: {killed}"),
        Fault::Restart => format!("immediate restarts: {restarts}"),
        Fault::Pause => format!("holders stopped mid-append: {paused}, their backends terminated: {terminated}"),
    };
    row.seconds = started.elapsed().as_secs_f64();
    report(row.clone());
    Some((row, problems))
}

fn assert_no_problems(problems: &[String]) {
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Three hosts, four jobs each at a time, on four ledgers.
const LOCKED: Load = Load { hosts: 3, jobs: 250, concurrency: 4, pause_ms: 5, pace_ms: 0, unlocked: false };

// ---------------------------------------------------------------------------
// The scenarios.

/// Random backends terminated every 20–50 ms while three hosts append: jobs
/// see `lost`, and no write of a lost job lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_never_let_a_lost_job_write() {
    let Some((_, problems)) = scenario("terminate", LOCKED, Fault::Terminate, |round, missing| {
        if round.injected.terminated == 0 {
            missing.push("no backend was terminated".into());
        }
        if round.outputs.refused() == 0 {
            missing.push("no job lost its lock between taking it and writing (none refused at get/set)".into());
        }
    })
    .await
    else {
        return;
    };
    assert_no_problems(&problems);
}

/// A host killed with SIGKILL while it holds a lock: the server frees its
/// locks, a replacement host and the others carry on, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_loses_nothing_and_leaves_no_lock() {
    let Some((_, problems)) = scenario("kill9", LOCKED, Fault::Kill9, |round, missing| {
        if !round.injected.killed_holding {
            missing.push("the killed host held no lock when killed".into());
        }
        match round.injected.replacement {
            Some(r) if round.outputs.acks.iter().any(|a| a.host == r) => {}
            _ => missing.push("the replacement host acknowledged nothing".into()),
        }
    })
    .await
    else {
        return;
    };
    assert_no_problems(&problems);
}

/// PostgreSQL restarted (immediate) mid-run: jobs fail with lost/unavailable
/// during the outage, every host keeps going and later jobs succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_survive_a_server_restart() {
    // Paced, so the outage does not use up the hosts' jobs.
    let load = Load { jobs: 300, pace_ms: 10, ..LOCKED };
    let Some((_, problems)) = scenario("restart", load, Fault::Restart, |round, missing| {
        let Some(restarted_at) = round.injected.restarted_at else {
            missing.push("no restart".into());
            return;
        };
        if round.outputs.saw_loss() == 0 {
            missing.push("no job saw lost/unavailable".into());
        }
        for host in 0..load.hosts {
            if !round.outputs.acks.iter().any(|a| a.host == host && a.at > restarted_at) {
                missing.push(format!("host {host} acknowledged nothing after the restart"));
            }
        }
    })
    .await
    else {
        return;
    };
    assert_no_problems(&problems);
}

/// A host stopped (SIGSTOP) while one of its jobs holds a lock between its
/// read and its write, its backends terminated, the others appending for a
/// second, then resumed (SIGCONT): its jobs must not write what they read
/// before the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_cannot_write_after_its_session_is_gone() {
    // Longer pauses: a stopped holder is most likely between read and write.
    let load = Load { pause_ms: 20, jobs: 150, ..LOCKED };
    let Some((_, problems)) = scenario("paused", load, Fault::Pause, |round, missing| {
        let Some((stopped, resumed)) = round.injected.paused else {
            missing.push("never caught the host between read and write under a lock".into());
            return;
        };
        if round.injected.terminated == 0 {
            missing.push("no backend of the stopped host was terminated".into());
        }
        if !round.outputs.acks.iter().any(|a| a.host != 0 && a.at > stopped && a.at < resumed) {
            missing.push("the other hosts acknowledged nothing while it was stopped".into());
        }
        if round.outputs.refused() == 0 {
            missing.push("no job of the stopped host was refused at get/set".into());
        }
    })
    .await
    else {
        return;
    };
    assert_no_problems(&problems);
}

/// The same load without locks and without faults: the checker must find
/// duplicates or lost updates, or it could not have found them above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_locks_shows_what_the_checker_catches() {
    let load = Load { unlocked: true, pause_ms: 3, jobs: 150, ..LOCKED };
    let Some((row, problems)) = scenario("control", load, Fault::None, |_, _| {}).await else {
        return;
    };
    assert_no_problems(&problems);
    assert!(row.duplicates + row.lost > 0, "the unlocked control run shows no duplicates or lost updates: {row:?}");
    assert_eq!(row.locks_left, 0, "no locks were taken, none may be left");
}

/// Deterministic, in process: job A locks the ledger, reads it and pauses
/// 800 ms; its backend is terminated during the pause and job B appends to
/// the same ledger before A resumes. A's write must be refused (`lost` at `set`) and the
/// ledger must keep B's token: it never goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_session_died_mid_pause_has_its_write_refused() {
    let Some(bin) = server() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let cluster = start_cluster(&bin);
    let holder = database_on(&cluster.url, "chaos-inproc-a").await;
    let other = database_on(&cluster.url, "chaos-inproc-b").await;
    let observer = connect(&cluster.url).await;
    let mut row = Row { scenario: "paused-inproc".into(), ..Row::default() };
    let mut problems = Vec::new();
    for round in 0..rounds() {
        let bucket = format!("inproc-{round}");
        let append = |pause_ms: u64| {
            json!([{"op": "append", "prefix": "ledger", "ledgers": 1, "bucket": bucket,
                    "pause_ms": pause_ms, "timeout_ms": LOCK_TIMEOUT_MS}])
        };
        let paused = spawn_script(&holder, append(800));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !mid_append(&observer, "chaos-inproc-a").await {
            assert!(Instant::now() < deadline, "A never got to its pause under the lock");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let terminated = terminate_all_of(&observer, "chaos-inproc-a").await;
        row.fault = format!("pausing holder's backend terminated: {}", round + 1);
        let b = results(&run_script(&other, append(0)).await).pop().expect("B's result");
        let a = results(&paused.await.expect("A's task")).pop().expect("A's result");

        let mut outputs = Outputs::default();
        for (who, result) in [(0, &a), (1, &b)] {
            outputs.add(who, Instant::now(), &json!({ "results": [result] }).to_string());
        }
        let check = check(&cluster.url, &bucket, &outputs.acks).await;
        row.add(&outputs, &check);

        let prefix = format!("paused-inproc round {round}");
        if terminated == 0 {
            problems.push(format!("{prefix}: A's backend was not terminated"));
        }
        if b.get("appended").is_none() {
            problems.push(format!("{prefix}: B did not append: {b}"));
        }
        if a != json!({"err": "lost", "at": "set"}) {
            problems.push(format!("{prefix}: A's write after its session died was not refused: {a}"));
        }
        if !check.clean() {
            problems.push(format!(
                "{prefix}: not fail-closed: {} duplicates, {} lost updates (the ledger went backwards), {} twice, \
                 {} locks left; e.g. {:?}",
                check.duplicates, check.lost, check.twice, check.locks_left, check.examples
            ));
        }
    }
    row.seconds = started.elapsed().as_secs_f64();
    report(row);
    assert_no_problems(&problems);
}

/// A host's database handle on the scratch cluster, migrated.
async fn database_on(url: &str, application_name: &str) -> Arc<Database> {
    let mut config = DbConfig::parse(url).expect("scratch cluster url");
    config.set_application_name(application_name);
    let db = Database::new(config, DbSettings::default());
    db.migrate().await.expect("migrate the scratch cluster");
    db
}
