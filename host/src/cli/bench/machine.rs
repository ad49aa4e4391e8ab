//! What the run ran on: cores, CPU model, memory, the PostgreSQL version, and
//! this process's resident memory and CPU time (read from /proc).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::floor::FloorConn;

/// The machine and server a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `available_parallelism`.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` from /proc/meminfo, in MiB.
    pub memory_mib: u64,
    /// `SELECT version()`.
    pub postgres: String,
    /// The server's `max_connections`.
    pub max_connections: String,
}

impl Machine {
    /// Reads the machine facts and asks the server for its version.
    pub async fn describe(conn: &FloorConn) -> anyhow::Result<Self> {
        let version = conn.client().query_one("SELECT version(), current_setting('max_connections')", &[]).await?;
        Ok(Self {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: cpu_model().unwrap_or_else(|| "unknown".into()),
            memory_mib: proc_kib("/proc/meminfo", "MemTotal:").unwrap_or(0) / 1024,
            postgres: version.try_get(0)?,
            max_connections: version.try_get(1)?,
        })
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// This process's resident memory, in KiB (`VmRSS`), or 0 if unknown.
pub fn rss_kib() -> u64 {
    proc_kib("/proc/self/status", "VmRSS:").unwrap_or(0)
}

/// A `Name:  123 kB` field of a /proc file.
fn proc_kib(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second in /proc/*/stat (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU time (user + system, all threads) this process has used so far, in
/// 10 ms ticks; zero if unknown.
pub fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| stat_ticks(&stat));
    Duration::from_millis(ticks.unwrap_or(0) * 1000 / USER_HZ)
}

/// CPU time of the local PostgreSQL's processes that serve one database
/// (backends and autovacuum workers: their process title names it), per
/// process, at one moment. Read in nanoseconds from /proc/PID/schedstat: a
/// backend of a short round uses less than one 10 ms tick of /proc/PID/stat.
pub struct ServerCpu {
    dbname: String,
    nanos: HashMap<u32, u64>,
}

impl ServerCpu {
    /// Reads every such process's CPU time so far, or `None` when no
    /// PostgreSQL process is visible (a server elsewhere).
    pub fn read(dbname: &str) -> Option<Self> {
        let needle = format!(" {dbname} ");
        let mut nanos = HashMap::new();
        let mut seen = false;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            if stat.split_once(" (").and_then(|(_, rest)| rest.rsplit_once(')')).map(|(name, _)| name)
                != Some("postgres")
            {
                continue;
            }
            seen = true;
            let title = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&title).replace('\0', " ").contains(&needle) {
                nanos.insert(pid, on_cpu_nanos(&entry.path()).unwrap_or(0));
            }
        }
        seen.then(|| Self { dbname: dbname.to_owned(), nanos })
    }

    /// CPU time those processes (and any started since) used since this
    /// reading, process by process: a backend that exits meanwhile does not
    /// make the sum shrink, but what it used after this reading is lost.
    /// Neither the WAL writer nor the checkpointer is counted.
    pub fn elapsed(&self) -> Option<Duration> {
        let now = Self::read(&self.dbname)?;
        let nanos: u64 =
            now.nanos.iter().map(|(pid, &n)| n.saturating_sub(self.nanos.get(pid).copied().unwrap_or(0))).sum();
        Some(Duration::from_nanos(nanos))
    }
}

/// Time a process has spent on a CPU, in ns (the first field of its schedstat).
fn on_cpu_nanos(proc_dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(proc_dir.join("schedstat")).ok()?.split_whitespace().next()?.parse().ok()
}

/// utime + stime of a /proc stat line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may contain spaces) in
    // parentheses; utime and stime are fields 14 and 15 of the line.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}
