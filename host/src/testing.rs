//! The database tests run against, found the same way by every test binary
//! (and by plugin authors' tests):
//!
//! 1. `PINLOCK_TEST_DATABASE_URL`, when set (a libpq `key=value` string or URL);
//! 2. else the local server at 127.0.0.1:5432, database `test`, user
//!    `postgres` (the database is created when missing);
//! 3. else, when PostgreSQL server binaries are installed, a throwaway
//!    cluster started once per process and stopped when the process ends
//!    (see [`crate::scratch`]).

use std::sync::OnceLock;
use std::time::Duration;

use crate::scratch::ScratchCluster;

/// The local server tests use when nothing else is named.
const LOCAL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// The test database's connection string (resolved once per process).
///
/// Panics with a message saying what to install or set when there is none:
/// a test without a database cannot run.
pub fn database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        // Resolved on a plain thread: callers may be inside a tokio runtime.
        std::thread::spawn(resolve).join().unwrap_or_else(|_| panic!("resolving the test database panicked"))
    })
    .clone()
}

fn resolve() -> String {
    if let Ok(url) = std::env::var("PINLOCK_TEST_DATABASE_URL") {
        return url;
    }
    let local_answers =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], 5432).into(), Duration::from_secs(1)).is_ok();
    if local_answers {
        create_database_if_missing("host=127.0.0.1 port=5432 user=postgres dbname=postgres", "test");
        return LOCAL.to_owned();
    }
    let Some(bin) = ScratchCluster::find_server() else {
        panic!(
            "no test database: nothing answers at 127.0.0.1:5432, PINLOCK_TEST_DATABASE_URL is not set, \
             and no PostgreSQL server binaries are installed under /usr/lib/postgresql to start one"
        );
    };
    eprintln!("pinlock tests: nothing answers at 127.0.0.1:5432; starting a throwaway cluster from {}", bin.display());
    let cluster = ScratchCluster::start(&bin).unwrap_or_else(|e| panic!("cannot start a throwaway cluster: {e}"));
    let url = cluster.url.clone();
    // Kept for the whole process; its watchdog stops it when the process ends.
    std::mem::forget(cluster);
    url
}

/// Creates `name` through the maintenance database at `admin_url` unless it exists.
fn create_database_if_missing(admin_url: &str, name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await else {
            return; // the tests will report the connection problem themselves
        };
        let task = tokio::spawn(connection);
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await;
        if matches!(exists, Ok(None)) {
            // Identifier, not a value: `name` is a constant of this module.
            if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
                // Another test binary may have created it at the same moment.
                eprintln!("pinlock tests: CREATE DATABASE {name}: {e}");
            }
        }
        drop(client);
        let _ = task.await;
    });
}
