//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory,
//! `pg_ctl start` on a free port, and stop plus delete when dropped. Used by
//! `pinlock demo` when no server answers, and by tests (the test database
//! fallback, the chaos suite, the partition test).
//!
//! The server runs as `postgres` when we are root (PostgreSQL refuses root).
//! A watchdog process stops the server and deletes its directory if this
//! process dies without dropping the cluster (SIGKILL, a test binary's
//! statics), so no server outlives its owner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Why a throwaway cluster could not be started or controlled.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct ScratchError {
    context: &'static str,
    message: String,
}

impl ScratchError {
    fn new(context: &'static str) -> impl FnOnce(String) -> Self {
        move |message| Self { context, message }
    }
}

/// How to start a throwaway cluster.
#[derive(Debug, Clone)]
pub struct ScratchOptions {
    /// Addresses the server listens on (`listen_addresses`).
    pub listen: Vec<String>,
    /// Extra server settings (lines `name = 'value'` in `postgresql.conf`).
    pub settings: Vec<(String, String)>,
    /// Extra `pg_hba.conf` lines, e.g. `host all all 169.254.0.0/16 trust`
    /// for clients on another address than 127.0.0.1.
    pub hba: Vec<String>,
}

impl Default for ScratchOptions {
    fn default() -> Self {
        Self { listen: vec!["127.0.0.1".into()], settings: Vec::new(), hba: Vec::new() }
    }
}

/// A running throwaway cluster; stopped and deleted when dropped.
pub struct ScratchCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres: bool,
    port: u16,
    watchdog: Option<Child>,
    /// Where to connect (libpq `key=value`, database `postgres`, over 127.0.0.1
    /// when the server listens there, else on the first listen address).
    pub url: String,
}

impl ScratchCluster {
    /// The newest installed server's bin directory, if any.
    pub fn find_server() -> Option<PathBuf> {
        let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        bins.sort();
        bins.pop().map(|(_, bin)| bin)
    }

    /// Creates and starts a cluster on 127.0.0.1 with the server in `bin`.
    pub fn start(bin: &Path) -> Result<Self, ScratchError> {
        Self::start_with(bin, &ScratchOptions::default())
    }

    /// Creates and starts a cluster as `options` say.
    pub fn start_with(bin: &Path, options: &ScratchOptions) -> Result<Self, ScratchError> {
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("pinlock-pg.")
            .tempdir()
            .map_err(|e| ScratchError::new("creating a scratch directory")(e.to_string()))?;
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()))
                .map_err(ScratchError::new("giving the scratch directory to the postgres user"))?;
        }
        let port = free_port().map_err(|e| ScratchError::new("finding a free port")(e.to_string()))?;
        let host = if options.listen.iter().any(|a| a == "127.0.0.1" || a == "*") {
            "127.0.0.1".to_owned()
        } else {
            options.listen.first().cloned().unwrap_or_else(|| "127.0.0.1".into())
        };
        let mut cluster = Self {
            bin: bin.to_owned(),
            as_postgres,
            port,
            url: format!("host={host} port={port} user=postgres dbname=postgres"),
            dir,
            watchdog: None,
        };
        run(cluster.pg("initdb").args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"]).arg(cluster.data()))
            .map_err(ScratchError::new("initdb"))?;
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\nfsync = off\n",
            options.listen.join(","),
            cluster.dir.path().display()
        );
        for (name, value) in &options.settings {
            conf.push_str(&format!("{name} = '{value}'\n"));
        }
        let hba: String = options.hba.iter().map(|line| format!("{line}\n")).collect();
        append(&cluster.data().join("postgresql.conf"), &conf)
            .map_err(|e| ScratchError::new("writing postgresql.conf")(e.to_string()))?;
        append(&cluster.data().join("pg_hba.conf"), &hba)
            .map_err(|e| ScratchError::new("writing pg_hba.conf")(e.to_string()))?;
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.pg_ctl(&["-w", "-t", "30", "start"]).map_err(ScratchError::new("starting the scratch server"))?;
        Ok(cluster)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Restarts the server, dropping every session (`mode`: `fast` or
    /// `immediate`, as `pg_ctl -m`).
    pub fn restart(&self, mode: &str) -> Result<(), ScratchError> {
        self.pg_ctl(&["-w", "-t", "30", "-m", mode, "restart"])
            .map_err(ScratchError::new("restarting the scratch server"))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let log = self.dir.path().join("server.log");
        let mut command = self.pg("pg_ctl");
        command.args(args).arg("-l").arg(&log).arg("-D").arg(self.data());
        run(&mut command).map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            format!("{e} (server log: {})", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        })
    }

    /// A command running `program` from the server's bin directory, as the
    /// postgres user when we are root.
    fn pg(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    }

    /// A shell in its own process group that waits for this process to end,
    /// then stops the server and deletes its directory.
    fn spawn_watchdog(&self) -> Result<Child, ScratchError> {
        use std::os::unix::process::CommandExt;
        let stop = self.pg("pg_ctl");
        let mut stop_line: Vec<String> = vec![stop.get_program().to_string_lossy().into_owned()];
        stop_line.extend(stop.get_args().map(|a| a.to_string_lossy().into_owned()));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} -m immediate -D '{data}' stop; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = stop_line.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" "),
            data = self.data().display(),
            dir = self.dir.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| ScratchError::new("starting the scratch cluster's watchdog")(e.to_string()))
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        // The TempDir removes the directory.
    }
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path)?.write_all(text.as_bytes())
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
