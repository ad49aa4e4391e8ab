//! A throwaway PostgreSQL cluster for `pinlock demo` when no server answers:
//! `initdb` into a temporary directory, `pg_ctl start` on a free port, and
//! stop plus delete on drop. Runs the server as `postgres` when we are root
//! (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A running throwaway cluster; stopped and deleted when dropped.
pub struct ScratchCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres: bool,
    /// Where to connect.
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

    /// Creates and starts a cluster with the server in `bin`.
    pub fn start(bin: &Path) -> anyhow::Result<Self> {
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("pinlock-demo-pg.").tempdir()?;
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()))
                .context("giving the scratch directory to the postgres user")?;
        }
        let port = free_port()?;
        let cluster = Self {
            bin: bin.to_owned(),
            as_postgres,
            url: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            dir,
        };
        let data = cluster.dir.path().join("data");
        let log = cluster.dir.path().join("server.log");
        run(cluster
            .pg(&cluster.bin.join("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&data))
        .context("initdb")?;
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {}", cluster.dir.path().display());
        run(cluster
            .pg(&cluster.bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(&log)
            .arg("-D")
            .arg(&data)
            .arg("start"))
        .with_context(|| format!("starting the scratch server (log: {})", log.display()))?;
        Ok(cluster)
    }

    fn pg(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        command
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.pg(&self.bin.join("pg_ctl")).args(["-m", "immediate", "-D"]).arg(&data).arg("stop").status();
        // The TempDir removes the directory.
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output()?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
