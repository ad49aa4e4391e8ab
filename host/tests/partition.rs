//! A network partition between a host and PostgreSQL, made in the kernel.
//!
//! Proves: when every packet between a host and the server is dropped (no
//! socket closed, no reset sent), the host declares its session lost (the
//! guard's `is-held()` turns false and its release answers `lost`) at least
//! [`MIN_MARGIN`] before the server grants the lock to another host, and the
//! server frees the partitioned host's lock within [`SERVER_BOUND`] of the
//! partition.
//!
//! How: the host under test is a real `pinlock run` process in a network
//! namespace of this test's own, joined by a veth pair to a throwaway cluster
//! that listens on the root side's veth address (and on 127.0.0.1). Once that
//! host holds the lock, blackhole routes on both sides (`ip route add
//! blackhole <peer>/32`) drop everything between the two addresses, so both
//! sides' keepalive and retransmission timers run as in a real outage. A
//! second host (in this process, over 127.0.0.1) then waits for the same lock;
//! its grant time is compared with the wall-clock time at which the
//! partitioned guest saw `is-held()` turn false.
//!
//! Needs root, `ip` (iproute2) with network namespaces and veth, and
//! PostgreSQL server binaries under /usr/lib/postgresql; without them it says
//! so loudly on stderr and skips. Takes about 25 s; about 80 s at worst.

mod common;

use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{guest_path, key_of};
use pinlock::db::{Database, DbConfig, DbSettings, LockError, LockMode};
use pinlock::scratch::{ScratchCluster, ScratchOptions};
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// How much earlier than any other grant the partitioned host must say lost.
const MIN_MARGIN: Duration = Duration::from_secs(2);
/// How soon after the partition the server must free the partitioned lock.
const SERVER_BOUND: Duration = Duration::from_secs(60);
/// How long the second host waits: past the bound, so a late grant is
/// measured rather than only reported missing.
const SECOND_HOST_WAIT: Duration = Duration::from_secs(65);
/// How long the partitioned host may take to start and get the lock.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_host_gives_up_its_lock_before_anyone_else_gets_it() {
    let Some(bin) = preflight() else { return };
    let mut net = match Netns::create() {
        Ok(net) => net,
        Err(Unsupported(why)) => return skip(&why),
    };

    // The server, reachable from the namespace only through the veth pair.
    let options = ScratchOptions {
        listen: vec!["127.0.0.1".into(), net.root_addr.to_string()],
        settings: Vec::new(),
        hba: vec![format!("host all all {}/32 trust", net.ns_addr)],
    };
    let cluster = ScratchCluster::start_with(&bin, &options).expect("start a throwaway cluster");
    let observer = connect(&cluster.url).await;

    // The second host, on 127.0.0.1 (never partitioned). Migrating first lets
    // the test map the entity to its advisory key before anyone locks it.
    let mut config = DbConfig::parse(&cluster.url).expect("the cluster's url parses");
    config.set_application_name("second-host");
    let second = Database::new(config, DbSettings::default());
    second.migrate().await.expect("migrate the throwaway cluster");
    let entity = Uuid::new_v4();
    let key = key_of(&observer, entity).await;

    // The host under test takes the lock, then watches its guard.
    let script = json!({"steps": [
        {"op": "acquire", "entity": entity},
        {"op": "wait_until_lost", "slot": 0, "max_ms": (STARTUP_LIMIT + SECOND_HOST_WAIT).as_millis() as u64},
        {"op": "kv_set", "bucket": "partition", "key": "after-loss", "value": "must not be written"},
        {"op": "release", "slot": 0},
    ]});
    let url = format!("host={} port={} user=postgres dbname=postgres", net.root_addr, cluster.port());
    let mut host = PartitionedHost::spawn(&net.name, &url, &script);
    let holder = wait_for_holder(&observer, key, net.ns_addr, &mut host).await;

    // The partition: both directions dropped in the kernel, sockets left open.
    let partitioned_at = net.blackhole();
    assert!(
        backend_alive(&observer, holder).await,
        "the partitioned host's backend must outlive the partition's start (no socket closed)"
    );

    // Another host asks for the same lock right away.
    let job = second.job_session();
    let asked = Instant::now();
    let granted = tokio::time::timeout(
        SECOND_HOST_WAIT + Duration::from_secs(5),
        job.acquire(entity, LockMode::Exclusive, Some(SECOND_HOST_WAIT)),
    )
    .await
    .expect("the second host's acquire must end by its own timeout");
    let granted_at = SystemTime::now();
    let freed_after = match &granted {
        Ok(_) => Some(since(partitioned_at, granted_at)),
        Err(LockError::Timeout) => None,
        Err(e) => panic!("the second host's acquire failed after {:?}: {e}", asked.elapsed()),
    };
    job.release_all().await;

    // What the partitioned host saw. It should have ended long ago; give it
    // a few seconds (its guest polls every 10 ms), then stop it.
    let (status, stdout, stderr) = host.finish(Duration::from_secs(5));
    let lost = lost_report(status, &stdout, &stderr);
    let lost_after = lost.as_ref().map(|l| since(partitioned_at, l.at));

    let show = |d: Option<f64>| d.map_or_else(|| "never".to_owned(), |d| format!("{d:.2} s"));
    let margin = match (lost_after, freed_after) {
        (Some(lost), Some(freed)) => Some(freed - lost),
        _ => None,
    };
    eprintln!(
        "partition: host said lost after {}, server granted the lock to another host after {} \
         (bound {} s), margin {} (at least {} s)",
        show(lost_after),
        show(freed_after),
        SERVER_BOUND.as_secs(),
        show(margin),
        MIN_MARGIN.as_secs(),
    );
    if !stderr.trim().is_empty() {
        eprintln!("partitioned host's log:\n{}", stderr.trim_end());
    }

    let lost = lost.unwrap_or_else(|| {
        panic!("the partitioned host never declared the session lost; its output: {stdout}; its log: {stderr}")
    });
    assert_eq!(lost.write, json!({"err": "lost"}), "a write after the loss must be refused as `lost`");
    assert_eq!(lost.release, json!({"err": "lost"}), "a lost guard's release must answer `lost`");
    let freed_after = freed_after.unwrap_or_else(|| {
        panic!(
            "the server did not free the partitioned host's lock within {} s of the partition \
             (it granted it to nobody else)",
            SECOND_HOST_WAIT.as_secs()
        )
    });
    assert!(
        freed_after <= SERVER_BOUND.as_secs_f64(),
        "the server freed the partitioned lock after {freed_after:.2} s, more than {} s",
        SERVER_BOUND.as_secs()
    );
    let margin = margin.expect("both times are known here");
    assert!(
        margin >= MIN_MARGIN.as_secs_f64(),
        "the host said lost only {margin:.2} s before another host was granted the lock (at least {} s needed)",
        MIN_MARGIN.as_secs()
    );
    assert!(!backend_alive(&observer, holder).await, "the partitioned backend ended before the grant");
}

/// Seconds from `from` to `to` (negative when `to` came first).
fn since(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------
// Skipping

/// The server binaries, when everything the test needs is here; otherwise
/// says why on stderr and returns `None`.
fn preflight() -> Option<std::path::PathBuf> {
    if !effective_uid_is_root() {
        skip("not running as root (network namespaces, veth and routes need root)");
        return None;
    }
    if !Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        skip("`ip` (iproute2) is not installed");
        return None;
    }
    let Some(bin) = ScratchCluster::find_server() else {
        skip("no PostgreSQL server binaries under /usr/lib/postgresql for a throwaway cluster");
        return None;
    };
    Some(bin)
}

fn skip(why: &str) {
    let line = "=".repeat(78);
    eprintln!("{line}\nSKIPPED partition test: {why}.\nNothing about partitions was checked.\n{line}");
}

fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// The namespace

/// Why the namespace could not be made here (the test skips).
struct Unsupported(String);

/// A network namespace joined to the root one by a veth pair on a /30 of
/// 169.254/16 that nothing else here uses. Deleted, with its routes, when
/// dropped.
struct Netns {
    name: String,
    root_if: String,
    root_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
    blackholed: bool,
}

impl Netns {
    fn create() -> Result<Self, Unsupported> {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let (root_addr, ns_addr) = pick_subnet();
        let name = format!("plk-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]).map_err(|e| Unsupported(format!("`ip netns add` failed: {e}")))?;
        let mut net = Self { name, root_if: format!("plk{tag}r"), root_addr, ns_addr, blackholed: false };
        let ns_if = format!("plk{tag}n");
        if let Err(e) = ip(&["link", "add", &net.root_if, "type", "veth", "peer", "name", &ns_if, "netns", &net.name]) {
            net.root_if.clear(); // nothing to delete
            return Err(Unsupported(format!("cannot create a veth pair: {e}")));
        }
        let root_cidr = format!("{root_addr}/30");
        let ns_cidr = format!("{ns_addr}/30");
        for args in [
            vec!["addr", "add", &root_cidr, "dev", &net.root_if],
            vec!["link", "set", &net.root_if, "up"],
            vec!["-n", &net.name, "addr", "add", &ns_cidr, "dev", &ns_if],
            vec!["-n", &net.name, "link", "set", &ns_if, "up"],
            vec!["-n", &net.name, "link", "set", "lo", "up"],
        ] {
            ip(&args).unwrap_or_else(|e| panic!("setting up the namespace: ip {}: {e}", args.join(" ")));
        }
        Ok(net)
    }

    /// Drops every packet between the two addresses, in both namespaces.
    /// Returns when the partition is complete.
    fn blackhole(&mut self) -> SystemTime {
        let to_ns = format!("{}/32", self.ns_addr);
        let to_root = format!("{}/32", self.root_addr);
        ip(&["route", "add", "blackhole", &to_ns]).expect("blackhole route in the root namespace");
        self.blackholed = true;
        ip(&["-n", &self.name, "route", "add", "blackhole", &to_root]).expect("blackhole route in the namespace");
        SystemTime::now()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.blackholed {
            let _ = ip(&["route", "del", "blackhole", &format!("{}/32", self.ns_addr)]);
        }
        if !self.root_if.is_empty() {
            let _ = ip(&["link", "del", &self.root_if]);
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("partition test: could not delete network namespace {}: {e}", self.name);
        }
    }
}

/// A /30 in 169.254/16 whose third octet appears in no address or route here
/// (0, 255 and 169, the cloud metadata one, are never used).
fn pick_subnet() -> (Ipv4Addr, Ipv4Addr) {
    let mut in_use = String::new();
    for args in [&["-4", "-o", "addr", "show"][..], &["-4", "route", "show", "table", "all"][..]] {
        let output = Command::new("ip").args(args).output().expect("run ip to list addresses and routes");
        in_use.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    for _ in 0..100 {
        let third = (rand::random::<u8>() % 253) + 1;
        if third == 169 || in_use.contains(&format!("169.254.{third}.")) {
            continue;
        }
        let base = (rand::random::<u8>() % 64) * 4;
        return (Ipv4Addr::new(169, 254, third, base + 1), Ipv4Addr::new(169, 254, third, base + 2));
    }
    panic!("no free /30 in 169.254.0.0/16: every third octet is in use?");
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).trim().to_owned()) }
}

// ---------------------------------------------------------------------------
// The partitioned host

/// The `pinlock run` process inside the namespace; killed when dropped.
struct PartitionedHost {
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl PartitionedHost {
    fn spawn(netns: &str, url: &str, script: &Value) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(env!("CARGO_BIN_EXE_pinlock"))
            .args(["--database-url", url, "--host-id", "partitioned"])
            .args(["--time-limit-ms", &(STARTUP_LIMIT + SECOND_HOST_WAIT).as_millis().to_string()])
            .arg("run")
            .arg(guest_path("pinlock_test_scripted.wasm"))
            .args(["--input", &script.to_string(), "--print-outputs"])
            .env("RUST_LOG", "warn,pinlock=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pinlock run in the namespace");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        Self { child: Some(child), stdout: Some(stdout), stderr: Some(stderr) }
    }

    /// The exit status if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("poll the partitioned host"))
    }

    /// Waits up to `limit` for the process to end (then kills it); its exit
    /// status (`None` if it had to be killed), stdout and stderr.
    fn finish(&mut self, limit: Duration) -> (Option<ExitStatus>, String, String) {
        let deadline = Instant::now() + limit;
        let mut status = self.exited();
        while status.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            status = self.exited();
        }
        self.kill();
        let text = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        (status, text(self.stdout.take()), text(self.stderr.take()))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PartitionedHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the partitioned guest reported: when it saw the guard lost, and
/// what a key-value write and the guard's release answered after that.
struct Lost {
    at: SystemTime,
    write: Value,
    release: Value,
}

/// Reads the job's output; `None` when the guard was still held at the end.
fn lost_report(status: Option<ExitStatus>, stdout: &str, stderr: &str) -> Option<Lost> {
    let Some(line) = stdout.lines().find(|l| l.starts_with('{')) else {
        let how = status.map_or_else(|| "was killed (still running)".to_owned(), |s| format!("exited with {s}"));
        eprintln!("partition test: the partitioned host {how} without a job output; stdout: {stdout}; log: {stderr}");
        return None;
    };
    let output: Value = serde_json::from_str(line).expect("the scripted job's output is JSON");
    let results = output["results"].as_array().expect("a results array");
    assert!(results[0]["ok"]["fence"].is_u64(), "the partitioned host's acquire: {}", results[0]);
    let waited = &results[1];
    if waited["held"] != json!(false) {
        return None;
    }
    let ms = waited["at_unix_ms"].as_u64().expect("wait_until_lost reports at_unix_ms");
    Some(Lost { at: UNIX_EPOCH + Duration::from_millis(ms), write: results[2].clone(), release: results[3].clone() })
}

// ---------------------------------------------------------------------------
// The server's view

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to the throwaway cluster");
    tokio::spawn(connection);
    client
}

/// Waits until a backend connected from `from` holds the advisory lock `key`
/// and returns its pid. Panics if the host exits or takes too long.
async fn wait_for_holder(observer: &Client, key: i64, from: Ipv4Addr, host: &mut PartitionedHost) -> i32 {
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        let row = observer
            .query_opt(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.classid = (($1::int8 >> 32) & 4294967295)::oid
                   AND l.objid = ($1::int8 & 4294967295)::oid
                   AND a.client_addr = $2::text::inet AND a.application_name = 'partitioned'",
                &[&key, &from.to_string()],
            )
            .await
            .expect("read pg_locks");
        if let Some(row) = row {
            return row.get(0);
        }
        if host.exited().is_some() || Instant::now() > deadline {
            let (status, stdout, stderr) = host.finish(Duration::ZERO);
            panic!(
                "the partitioned host did not take the lock within {} s (status {status:?}); stdout: {stdout}; log: {stderr}",
                STARTUP_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn backend_alive(observer: &Client, pid: i32) -> bool {
    observer
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", &[&pid])
        .await
        .expect("read pg_stat_activity")
        .get(0)
}
