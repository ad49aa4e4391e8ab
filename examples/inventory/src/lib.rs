//! Inventory: product stock in the key-value store, kept consistent with
//! per-product locks. See README.md for the input formats.

use std::{thread, time::Duration};

use pinlock_guest::{BoxError, JsonWorker, Uuid, export_worker, info, kv::Bucket, lock};
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

type Result<T> = std::result::Result<T, BoxError>;

struct Inventory;

impl JsonWorker for Inventory {
    type Input = Request;
    type Output = Value;
    type Error = BoxError;

    fn run(request: Request) -> Result<Value> {
        let stock = Stock::open()?;
        match request {
            Request::Restock { product, quantity } => lock(product).run(|_| stock.restock(product, quantity)),
            Request::Reserve { product, quantity, think_ms, unlocked: true } => {
                stock.reserve(product, quantity, Duration::from_millis(think_ms), None)
            }
            Request::Reserve { product, quantity, think_ms, unlocked: false } => lock(product).run(|guard| {
                stock.reserve(product, quantity, Duration::from_millis(think_ms), Some(guard.fencing_token()))
            }),
            Request::Stock { product } => Ok(json!({ "stock": stock.get(product)? })),
        }
    }
}

export_worker!(json Inventory);

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
            info!("{product}: {quantity} wanted, {stock} in stock");
            return Ok(json!({ "reserved": false, "stock": stock }));
        }
        let after = stock - quantity;
        self.set(product, after)?;
        Ok(json!({ "reserved": true, "quantity": quantity, "stock": after, "fence": fence }))
    }
}
