//! `export_worker!(json a::path::To::Worker)` compiles, including a path
//! starting with `crate`, and the exported JSON worker parses its input.

mod jobs {
    pub mod math {
        pub struct Double;

        impl pinlock_guest::JsonWorker for Double {
            type Input = i64;
            type Output = i64;
            type Error = String;

            fn run(n: i64) -> Result<i64, String> {
                n.checked_mul(2).ok_or_else(|| format!("{n} is too large to double"))
            }
        }
    }
}

pinlock_guest::export_worker!(json crate::jobs::math::Double);

#[test]
fn exported_json_worker_runs() {
    use pinlock_guest::{Json, Worker};
    assert_eq!(Json::<jobs::math::Double>::run(b"21".to_vec()).unwrap(), b"42");
    let error = Json::<jobs::math::Double>::run(b"\"x\"".to_vec()).unwrap_err();
    assert!(error.starts_with("invalid input: invalid type: string \"x\", expected i64"), "{error}");
}
