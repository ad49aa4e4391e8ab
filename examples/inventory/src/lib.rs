//! Inventory: product stock in the key-value store, kept consistent with
//! per-product locks. See README.md for the input formats.

use std::{error::Error, thread, time::Duration};

use pinlock_guest::{Mode, Uuid, Worker, export_worker, kv::Bucket, log, with_lock};
use serde::Deserialize;
use serde_json::{Value, json};

/// One job's input.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Restock {
        product: Uuid,
        quantity: u64,
    },
    Reserve {
        product: Uuid,
        quantity: u64,
        /// Pause between reading and writing the stock, to make races visible.
        #[serde(default = "default_think_ms")]
        think_ms: u64,
        /// Skip the lock, to show the lost updates it prevents.
        #[serde(default)]
        unlocked: bool,
    },
    Stock {
        product: Uuid,
    },
}

fn default_think_ms() -> u64 {
    5
}

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Inventory;

impl Worker for Inventory {
    fn run(input: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        handle(&input).map_err(|e| e.to_string())
    }
}

export_worker!(Inventory);

fn handle(input: &[u8]) -> Result<Vec<u8>> {
    let request = serde_json::from_slice(input)?;
    let stock = Stock::open()?;
    let output = match request {
        Request::Restock { product, quantity } => {
            // `??`: first the lock's error, then the closure's.
            with_lock(product, Mode::Exclusive, |_| stock.restock(product, quantity))??
        }
        Request::Reserve { product, quantity, think_ms, unlocked } => {
            let think = Duration::from_millis(think_ms);
            if unlocked {
                stock.reserve(product, quantity, think, None)?
            } else {
                with_lock(product, Mode::Exclusive, |guard| {
                    stock.reserve(product, quantity, think, Some(guard.fencing_token()))
                })??
            }
        }
        Request::Stock { product } => json!({ "stock": stock.get(product)? }),
    };
    Ok(serde_json::to_vec(&output)?)
}

/// Stock levels: bucket "inventory", product UUID → stock as decimal text.
struct Stock(Bucket);

impl Stock {
    fn open() -> Result<Self> {
        Ok(Self(Bucket::open("inventory")?))
    }

    fn get(&self, product: Uuid) -> Result<u64> {
        match self.0.get_string(&product.to_string())? {
            Some(text) => Ok(text.parse()?),
            None => Ok(0),
        }
    }

    fn set(&self, product: Uuid, stock: u64) -> Result<()> {
        Ok(self.0.set_string(&product.to_string(), &stock.to_string())?)
    }

    /// Call with the product locked.
    fn restock(&self, product: Uuid, quantity: u64) -> Result<Value> {
        let stock = self.get(product)?.checked_add(quantity).ok_or("stock overflow")?;
        self.set(product, stock)?;
        Ok(json!({ "stock": stock }))
    }

    /// A read-modify-write: correct only with the product locked (`fence` is
    /// the lock's fencing token, `None` when unlocked).
    fn reserve(&self, product: Uuid, quantity: u64, think: Duration, fence: Option<u64>) -> Result<Value> {
        let stock = self.get(product)?;
        thread::sleep(think);
        if stock < quantity {
            log::info(&format!("{product}: {quantity} wanted, {stock} in stock"));
            return Ok(json!({ "reserved": false, "stock": stock }));
        }
        let after = stock - quantity;
        self.set(product, after)?;
        Ok(json!({ "reserved": true, "quantity": quantity, "stock": after, "fence": fence }))
    }
}
