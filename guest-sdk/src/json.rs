//! Typed JSON workers (feature `json`, on by default).

use std::{fmt::Display, marker::PhantomData};

use serde::{Serialize, de::DeserializeOwned};

use crate::Worker;

/// A pinlock job on JSON: the SDK parses the input into [`Input`](Self::Input),
/// writes [`Output`](Self::Output) as JSON, and turns an error into the job's
/// error message with its `Display`.
///
/// Input that is not valid JSON for `Input` fails the job without calling
/// [`run`](Self::run), with a message naming the problem (``invalid input:
/// missing field `to` at line 1 column 60 …``). Empty input counts as `null`,
/// so a worker that needs no input can take `()` or an `Option`.
///
/// Export it with `export_worker!(json MyWorker)`:
///
/// ```no_run,standalone_crate
/// use pinlock_guest::{BoxError, JsonWorker, export_worker, info, kv::Bucket};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Greet {
///     name: String,
/// }
///
/// #[derive(Serialize)]
/// struct Greeting {
///     text: String,
///     greeted_before: bool,
/// }
///
/// struct Greeter;
///
/// impl JsonWorker for Greeter {
///     type Input = Greet;
///     type Output = Greeting;
///     type Error = BoxError;
///
///     fn run(input: Greet) -> Result<Greeting, BoxError> {
///         let seen = Bucket::open("greeted")?;
///         let greeted_before = seen.exists(&input.name)?;
///         seen.set_json(&input.name, &true)?;
///         info!("greeting {} (before: {greeted_before})", input.name);
///         Ok(Greeting { text: format!("hello, {}", input.name), greeted_before })
///     }
/// }
///
/// export_worker!(json Greeter);
/// ```
///
/// A worker's `run` is a plain function: unit-test the parts that do not
/// call the host (locks, key-value, logging) with `cargo test` on your own
/// machine, and whole jobs on a pinlock host (see the guide,
/// `docs/writing-workers.md`).
pub trait JsonWorker {
    /// What a job's input is parsed into.
    type Input: DeserializeOwned;
    /// What a job returns, written as JSON.
    type Output: Serialize;
    /// Why a job failed; its `Display` becomes the job's error message.
    type Error: Display;

    /// Runs one job. Locks still held when this returns are released by the
    /// host.
    fn run(input: Self::Input) -> Result<Self::Output, Self::Error>;
}

/// The bytes [`Worker`] that `export_worker!(json W)` exports for a
/// [`JsonWorker`] `W`: parses the input, runs `W`, writes the output.
///
/// Call it in a unit test to check what a job's input and output look like
/// as bytes (this runs on your machine as long as `W` makes no host calls):
///
/// ```
/// use pinlock_guest::{Json, JsonWorker, Worker};
///
/// struct Double;
///
/// impl JsonWorker for Double {
///     type Input = i64;
///     type Output = i64;
///     type Error = String;
///
///     fn run(n: i64) -> Result<i64, String> {
///         n.checked_mul(2).ok_or_else(|| format!("{n} is too large to double"))
///     }
/// }
///
/// assert_eq!(Json::<Double>::run(b"21".to_vec()).unwrap(), b"42");
/// let error = Json::<Double>::run(br#"{"n":21}"#.to_vec()).unwrap_err();
/// assert!(error.starts_with("invalid input: invalid type: map, expected i64"));
/// ```
pub struct Json<W>(PhantomData<fn() -> W>);

impl<W: JsonWorker> Worker for Json<W> {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let input = parse_input::<W::Input>(&input)?;
        let output = W::run(input).map_err(|e| e.to_string())?;
        serde_json::to_vec(&output).map_err(|e| format!("the job's output cannot be written as JSON: {e}"))
    }
}

fn parse_input<T: DeserializeOwned>(input: &[u8]) -> Result<T, String> {
    let input = if input.trim_ascii().is_empty() { b"null".as_slice() } else { input };
    serde_json::from_slice(input).map_err(|e| {
        let excerpt = String::from_utf8_lossy(&input[..input.len().min(80)]);
        let more = if input.len() > 80 { "…" } else { "" };
        format!("invalid input: {e} (expected JSON for {}; got {excerpt}{more})", std::any::type_name::<T>())
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Transfer {
        from: String,
        amount: u64,
    }

    struct Echo;

    impl JsonWorker for Echo {
        type Input = Transfer;
        type Output = serde_json::Value;
        type Error = String;

        fn run(input: Transfer) -> Result<serde_json::Value, String> {
            if input.amount == 0 {
                return Err("nothing to move".into());
            }
            Ok(serde_json::json!({ "from": input.from, "amount": input.amount }))
        }
    }

    struct Unit;

    impl JsonWorker for Unit {
        type Input = ();
        type Output = &'static str;
        type Error = String;

        fn run((): ()) -> Result<&'static str, String> {
            Ok("done")
        }
    }

    #[test]
    fn valid_input_runs_and_writes_json() {
        let output = Json::<Echo>::run(br#"{"from":"a","amount":3}"#.to_vec()).unwrap();
        assert_eq!(output, br#"{"amount":3,"from":"a"}"#);
    }

    #[test]
    fn invalid_input_fails_with_a_clear_message() {
        let error = Json::<Echo>::run(br#"{"from":"a"}"#.to_vec()).unwrap_err();
        assert!(error.starts_with("invalid input: missing field `amount`"), "{error}");
        assert!(error.contains("Transfer"), "{error}");
        let error = Json::<Echo>::run(b"not json".to_vec()).unwrap_err();
        assert!(error.starts_with("invalid input: expected"), "{error}");
        assert!(error.contains("got not json"), "{error}");
    }

    #[test]
    fn errors_become_the_job_message() {
        assert_eq!(Json::<Echo>::run(br#"{"from":"a","amount":0}"#.to_vec()).unwrap_err(), "nothing to move");
    }

    /// Output that cannot be written as JSON (here a map with non-string
    /// keys) fails the job with a message saying so, instead of returning
    /// bytes that are not JSON. The control: the same worker with output
    /// that can be written returns it.
    #[test]
    fn output_that_is_not_json_fails_the_job_clearly() {
        use std::collections::BTreeMap;

        struct Pairs;

        impl JsonWorker for Pairs {
            type Input = bool;
            type Output = BTreeMap<(u8, u8), u8>;
            type Error = String;

            fn run(writable: bool) -> Result<Self::Output, String> {
                Ok(if writable { BTreeMap::new() } else { BTreeMap::from([((1, 2), 3)]) })
            }
        }

        let error = Json::<Pairs>::run(b"false".to_vec()).unwrap_err();
        assert_eq!(error, "the job's output cannot be written as JSON: key must be a string");
        assert_eq!(Json::<Pairs>::run(b"true".to_vec()).unwrap(), b"{}");
    }

    #[test]
    fn empty_input_is_null() {
        assert_eq!(Json::<Unit>::run(Vec::new()).unwrap(), br#""done""#);
        assert_eq!(Json::<Unit>::run(b"null".to_vec()).unwrap(), br#""done""#);
    }
}
