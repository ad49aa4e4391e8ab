//! `pinlock new NAME`: writes a worker crate that builds as it is with
//! `cargo build --release --target wasm32-wasip2` and runs with `pinlock run`.
//! Until `pinlock-guest` is published, the crate depends on this checkout's
//! `guest-sdk/` by absolute path (its Cargo.toml says how to switch).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

/// Arguments of `pinlock new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name (letters, digits, `-` and `_`, starting with a letter).
    pub name: String,
    /// Where to write it (default: ./NAME). Must not exist or be empty.
    #[arg(long)]
    pub path: Option<PathBuf>,
}

/// The SDK of the checkout this binary was built from.
fn guest_sdk_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("guest-sdk");
    dir.canonicalize().unwrap_or(dir)
}

/// Writes the crate; refuses a bad name or a non-empty directory.
pub async fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} already exists and is not empty: choose another name or --path", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} already exists and is not a directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    let sdk = guest_sdk_dir();
    if !sdk.join("Cargo.toml").is_file() {
        eprintln!(
            "warning: the pinlock-guest SDK is not at {} (this binary was built elsewhere); \
             edit the crate's Cargo.toml to point at a checkout of pinlock's guest-sdk/",
            sdk.display()
        );
    }
    let name = &args.name;
    let lib = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", LIB_RS.to_owned()),
        ("README.md", readme(name, &lib)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        ("rust-toolchain.toml", RUST_TOOLCHAIN.to_owned()),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, contents) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created worker crate `{name}` in {}", dir.display());
    println!();
    println!("  cd {}", dir.display());
    println!("  cargo build --release --target wasm32-wasip2");
    println!(
        "  pinlock run target/wasm32-wasip2/release/{lib}.wasm --input '{{\"counter\":\"visits\"}}' --jobs 10 --concurrency 4 --print-outputs"
    );
    Ok(ExitCode::SUCCESS)
}

/// A name cargo accepts for a package and that makes a usable library name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let Some(first) = name.chars().next() else {
        bail!("the worker's name is empty");
    };
    if !first.is_ascii_alphabetic() {
        bail!("invalid worker name {name:?}: it must start with an ASCII letter");
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        bail!("invalid worker name {name:?}: {bad:?} is not allowed (use ASCII letters, digits, `-` and `_`)");
    }
    if name.len() > 64 {
        bail!("invalid worker name {name:?}: at most 64 characters");
    }
    // Crates the worker would clash with, and names cargo refuses.
    const RESERVED: &str =
        "test std core alloc proc_macro self super crate build deps examples pinlock pinlock-guest pinlock_guest";
    if RESERVED.split(' ').any(|r| r == name) || is_keyword(name) {
        bail!("invalid worker name {name:?}: it is reserved (a Rust keyword or a crate it would clash with)");
    }
    Ok(())
}

fn is_keyword(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false", "fn", "for",
        "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct",
        "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "gen",
        "macro", "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
    ];
    KEYWORDS.contains(&name)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    let sdk = sdk.display().to_string().replace('\\', "/");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A worker is a library built as a WebAssembly component.
crate-type = ["cdylib"]

[dependencies]
# pinlock-guest is not published yet: this points at the checkout `pinlock new`
# was built from. To use another checkout, change the path; to use git, write
#   pinlock-guest = {{ git = "<pinlock's git URL>" }}   (the repository root; cargo finds guest-sdk/)
# and once it is on crates.io,
#   pinlock-guest = "0.1"
pinlock-guest = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# Small, fast components.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1

# Its own workspace, so it builds wherever it lives (remove this table to make
# it a member of an enclosing workspace).
[workspace]
"#
    )
}

const LIB_RS: &str = r#"//! A pinlock worker: adds to a named counter, under an exclusive lock on it,
//! so no two jobs (on any host sharing the database) lose each other's update.

use std::time::Duration;

use pinlock_guest::{BoxError, Entity, JsonWorker, export_worker, info, kv::Bucket, lock};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The counter's name.
    counter: String,
    /// How much to add (default 1).
    #[serde(default = "one")]
    add: u64,
}

fn one() -> u64 {
    1
}

#[derive(Serialize)]
struct Output {
    counter: String,
    value: u64,
    fencing_token: u64,
}

struct Counter;

impl JsonWorker for Counter {
    type Input = Input; // the job's JSON input
    type Output = Output; // the job's JSON output
    type Error = BoxError; // its text fails the job

    fn run(Input { counter, add }: Input) -> Result<Output, BoxError> {
        // Exclusive across every job of every host sharing the database;
        // waits at most 5 s for it. The lock is released when `run` returns.
        lock(Entity::named(&format!("counter:{counter}"))).timeout(Duration::from_secs(5)).run(|guard| {
            let counters = Bucket::open("counters")?;
            let value = counters.get_json::<u64>(&counter)?.unwrap_or(0) + add;
            counters.set_json(&counter, &value)?; // commits only while the lock is held
            info!("{counter} = {value} (fencing token {})", guard.fencing_token());
            Ok(Output { counter, value, fencing_token: guard.fencing_token() })
        })
    }
}

export_worker!(json Counter);
"#;

fn readme(name: &str, lib: &str) -> String {
    format!(
        r#"# {name}

A pinlock worker: each job adds to a named
counter in the key-value store, under an exclusive lock on that counter, so
concurrent jobs never lose an update.

| Input | Output |
|---|---|
| `{{"counter":"visits"}}` or `{{"counter":"visits","add":5}}` | `{{"counter":"visits","value":N,"fencing_token":T}}` |

## Build

```sh
cargo build --release --target wasm32-wasip2
```

(`rust-toolchain.toml` lists the `wasm32-wasip2` target; with an older rustup,
`rustup target add wasm32-wasip2`.) Cargo writes the component to
`target/wasm32-wasip2/release/{lib}.wasm`.

## Run

Against PostgreSQL (`DATABASE_URL`, or `PGHOST`/`PGUSER`/…, else localhost:5432):

```sh
pinlock run target/wasm32-wasip2/release/{lib}.wasm --input '{{"counter":"visits"}}' --jobs 100 --concurrency 8
pinlock run target/wasm32-wasip2/release/{lib}.wasm --input '{{"counter":"visits"}}' --print-outputs   # value 101
```

## Test

Add `pinlock` (the host crate, `host/` of the pinlock checkout) and `tokio` as
dev-dependencies and use `pinlock::testing::{{TestHost, WorkerBuild}}` from a
test in `tests/`: it builds this crate, runs jobs against a test database and
returns typed outputs.
"#
    )
}

const CARGO_CONFIG: &str = r#"# A 64 KiB shadow stack instead of Rust's default 1 MiB keeps the worker's
# linear memory (and what the host resets after each job) small.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

const RUST_TOOLCHAIN: &str = r#"# Stable Rust plus the target workers build for, so no manual
# `rustup target add` is needed.
[toolchain]
channel = "stable"
targets = ["wasm32-wasip2"]
profile = "minimal"
"#;
