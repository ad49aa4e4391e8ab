//! `pinlock:host/logging`: guest log lines go to the host's tracing output,
//! tagged with the job id. [`write_line`] is shared with `wasi:logging`.

use super::PinlockView;
use super::bindings::pinlock::host::logging::{Host, Level};

/// Longest log line kept; the rest is cut.
const MAX_LINE: usize = 4096;

/// Writes one guest line under the target `pinlock::guest`, cut to
/// [`MAX_LINE`] bytes; `context` is the standard interface's grouping
/// string (empty for pinlock's own).
pub(super) fn write_line(job: u64, level: tracing::Level, context: &str, message: &str) {
    let message = &message[..message.floor_char_boundary(MAX_LINE)];
    let context = &context[..context.floor_char_boundary(MAX_LINE)];
    macro_rules! line {
        ($level:expr) => {
            if context.is_empty() {
                tracing::event!(target: "pinlock::guest", $level, job, "{message}")
            } else {
                tracing::event!(target: "pinlock::guest", $level, job, context, "{message}")
            }
        };
    }
    match level {
        tracing::Level::TRACE => line!(tracing::Level::TRACE),
        tracing::Level::DEBUG => line!(tracing::Level::DEBUG),
        tracing::Level::INFO => line!(tracing::Level::INFO),
        tracing::Level::WARN => line!(tracing::Level::WARN),
        _ => line!(tracing::Level::ERROR),
    }
}

impl Host for PinlockView<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        write_line(self.db.job_id(), level, "", &message);
        Ok(())
    }
}
