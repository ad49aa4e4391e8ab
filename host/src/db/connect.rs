//! Where the database is and how a session is opened: libpq-style settings,
//! `application_name` so every held lock can be traced to its host, TCP
//! keepalives and a user timeout so a partitioned session is noticed (see
//! [`super::liveness`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket, tls::NoTlsStream};

use super::{DbError, liveness};

/// How long opening one session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to connect. Built from a URL or libpq-style environment.
#[derive(Clone)]
pub struct DbConfig {
    config: Config,
}

impl DbConfig {
    /// Parses a `postgres://` URL or a libpq `key=value` string.
    pub fn parse(url: &str) -> Result<Self, DbError> {
        let config = Config::from_str(url).map_err(|e| DbError::Config(e.to_string()))?;
        Ok(Self::with_defaults(config))
    }

    /// Settings from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD` and
    /// `PGDATABASE`, each falling back to localhost, 5432, `postgres` and the
    /// user name.
    pub fn from_pg_env() -> Result<Self, DbError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = Config::new();
        config.host(var("PGHOST").as_deref().unwrap_or("localhost"));
        if let Some(port) = var("PGPORT") {
            let port =
                port.parse::<u16>().map_err(|_| DbError::Config(format!("PGPORT is not a port number: {port:?}")))?;
            config.port(port);
        }
        let user = var("PGUSER").unwrap_or_else(|| "postgres".to_owned());
        config.dbname(var("PGDATABASE").as_deref().unwrap_or(&user));
        config.user(&user);
        if let Some(password) = var("PGPASSWORD") {
            config.password(password);
        }
        Ok(Self::with_defaults(config))
    }

    /// Fills what a URL may leave out, as libpq would.
    fn with_defaults(mut config: Config) -> Self {
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_user().is_none() {
            config.user("postgres");
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or("postgres").to_owned();
            config.dbname(&user);
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(liveness::CLIENT_KEEPALIVE_IDLE)
            .keepalives_interval(liveness::CLIENT_KEEPALIVE_INTERVAL)
            .keepalives_retries(liveness::CLIENT_KEEPALIVE_COUNT)
            .tcp_user_timeout(liveness::CLIENT_TCP_USER_TIMEOUT);
        Self { config }
    }

    /// Names this host's sessions in `pg_stat_activity` (truncated to the
    /// server's 63-byte limit).
    pub fn set_application_name(&mut self, name: &str) {
        self.config.application_name(&name[..name.floor_char_boundary(63)]);
    }

    /// The `application_name` sessions announce (as the server keeps it).
    pub fn application_name(&self) -> &str {
        self.config.get_application_name().unwrap_or("")
    }

    /// `user@host:port/dbname`, for messages. Never contains the password.
    pub fn display_target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.config.get_user().unwrap_or("postgres"),
            host,
            port,
            self.config.get_dbname().unwrap_or("postgres")
        )
    }

    /// The driver's configuration (the benchmark's raw floor connections use it).
    pub fn driver_config(&self) -> &Config {
        &self.config
    }

    /// Checks that a server answers and accepts us (opens and closes a session).
    pub async fn ping(&self) -> Result<(), DbError> {
        let answered = self.with_client(async |client| client.simple_query("SELECT 1").await).await?;
        answered.map(|_| ()).map_err(DbError::query("checking the connection"))
    }

    /// Opens a short-lived connection, runs `work` on it and closes it again,
    /// waiting for the connection to end (migrations, `pinlock locks`, ...).
    pub(crate) async fn with_client<T>(&self, work: impl AsyncFnOnce(&mut Client) -> T) -> Result<T, DbError> {
        let (mut client, connection) = self.open().await?;
        let task = tokio::spawn(connection);
        let result = work(&mut client).await;
        drop(client);
        let _ = task.await;
        Ok(result)
    }

    /// Opens one raw connection; the caller spawns the connection future.
    pub(crate) async fn open(&self) -> Result<(Client, Connection<Socket, NoTlsStream>), DbError> {
        let connecting = self.config.connect(NoTls);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(cause)) => Err(DbError::Connect { target: self.display_target(), cause }),
            Err(_) => Err(DbError::ConnectTimeout { target: self.display_target(), after: CONNECT_TIMEOUT }),
        }
    }
}

/// One connection that a host's background statements share (the queue's,
/// the dashboard's), opened on first use and reopened when it dropped. It is
/// never a lock session.
pub struct SharedClient {
    config: DbConfig,
    /// Run once on each new connection (session settings such as timeouts).
    setup: &'static str,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl SharedClient {
    /// A client of `config` whose connections first run `setup`. Does no I/O.
    pub fn new(config: DbConfig, setup: &'static str) -> Self {
        Self { config, setup, client: tokio::sync::Mutex::new(None) }
    }

    /// Where it connects.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// The connection, opened (again) if there is none alive.
    pub async fn get(&self) -> Result<Arc<Client>, DbError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = self.config.open().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "shared connection ended");
            }
        });
        client.batch_execute(self.setup).await.map_err(DbError::query("setting up a shared connection"))?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display_target())
    }
}
