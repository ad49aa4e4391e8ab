//! The inventory example across processes: two `pinlock run` processes
//! reserve stock of one product concurrently. With locks exactly the stock is
//! sold; the unlocked twin shows the lost updates the locks prevent.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const STOCK: u64 = 40;
const ORDERS_PER_PROCESS: u64 = 40;

fn pinlock(args: &[&str], input: &Value) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pinlock"));
    command
        .arg("run")
        .arg(guest_path("inventory.wasm"))
        .args(args)
        .args(["--input", &input.to_string(), "--print-outputs"])
        .env("DATABASE_URL", database_url())
        .env("RUST_LOG", "warn");
    command
}

fn outputs(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "pinlock failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("job output is JSON"))
        .collect()
}

/// Restocks a fresh product, runs two processes of orders, returns (sold, left).
fn sell_from_two_processes(unlocked: bool) -> (u64, u64) {
    let product = Uuid::new_v4();
    let restock = json!({"action": "restock", "product": product, "quantity": STOCK});
    outputs(&pinlock(&[], &restock).output().expect("run restock"));
    let order = json!({"action": "reserve", "product": product, "quantity": 1, "unlocked": unlocked});
    let jobs = ORDERS_PER_PROCESS.to_string();
    let processes: Vec<_> =
        (0..2).map(|_| pinlock(&["--jobs", &jobs, "--concurrency", "8"], &order).spawn_piped()).collect();
    let mut sold = 0;
    for process in processes {
        let output = process.wait_with_output().expect("pinlock process");
        sold += outputs(&output).iter().filter(|o| o["reserved"] == json!(true)).count() as u64;
    }
    let stock = outputs(&pinlock(&[], &json!({"action": "stock", "product": product})).output().expect("run stock"));
    (sold, stock[0]["stock"].as_u64().expect("stock number"))
}

trait SpawnPiped {
    fn spawn_piped(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn spawn_piped(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn pinlock")
    }
}

#[test]
fn two_hosts_with_locks_sell_exactly_the_stock() {
    let (sold, left) = sell_from_two_processes(false);
    assert_eq!(sold, STOCK, "never more than the stock, and all of it");
    assert_eq!(left, 0);
}

#[test]
fn without_locks_updates_are_lost() {
    let (sold, left) = sell_from_two_processes(true);
    assert!(sold + left > STOCK, "expected lost updates without locks: sold {sold}, left {left}");
}
