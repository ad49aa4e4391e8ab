//! Builds the WebAssembly guests this crate embeds or tests with: the
//! `examples/` workers and the fixtures under `tests/guests/`. A nested cargo
//! with its own target dir (sharing the outer one would deadlock on its lock),
//! for `wasm32-wasip2`, which produces components directly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest packages built, and the .wasm file each produces.
const GUESTS: &[(&str, &str)] = &[
    ("inventory", "inventory.wasm"),
    ("transfer", "transfer.wasm"),
    ("singleton", "singleton.wasm"),
    ("report", "report.wasm"),
    ("fenced-write", "fenced_write.wasm"),
    ("pinlock-test-scripted", "pinlock_test_scripted.wasm"),
    ("pinlock-test-bench", "pinlock_test_bench.wasm"),
    ("pinlock-test-wasi-kv", "pinlock-test-wasi-kv.wasm"),
    ("pinlock-test-wasi-lock", "pinlock-test-wasi-lock.wasm"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives inside the workspace").to_path_buf();
    for watched in ["guest-sdk", "host/wit", "examples", "host/tests/guests", "Cargo.toml", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_wasm_target();
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--profile", "guest", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for (package, _) in GUESTS {
        command.args(["-p", package]);
    }
    let status = command.status().unwrap_or_else(|e| panic!("cannot run cargo to build the guests: {e}"));
    if !status.success() {
        panic!(
            "building the wasm32-wasip2 guests failed (see above). \
             Is the target installed? `rustup target add wasm32-wasip2`"
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("guest");
    for (_, file) in GUESTS {
        check_exists(&out.join(file));
    }
    println!("cargo:rustc-env=PINLOCK_GUESTS_DIR={}", out.display());
}

/// Adds the `wasm32-wasip2` target to the toolchain building us when it is
/// missing (rust-toolchain.toml lists it, but rustup installs listed targets
/// only when it installs the toolchain itself).
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let Some(sysroot) = sysroot.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()) else {
        return;
    };
    if Path::new(&sysroot).join("lib/rustlib/wasm32-wasip2").is_dir() {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", "wasm32-wasip2"]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        _ => println!("cargo:warning=could not add the wasm32-wasip2 target; run `rustup target add wasm32-wasip2`"),
    }
}

fn check_exists(path: &Path) {
    if !path.is_file() {
        panic!("guest build did not produce {}", path.display());
    }
}
