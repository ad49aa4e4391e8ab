//! `pinlock:host/logging`: guest log lines go to the host's tracing output,
//! tagged with the job id.

use super::PinlockView;
use super::bindings::pinlock::host::logging::{Host, Level};

/// Longest log line kept; the rest is cut.
const MAX_LINE: usize = 4096;

impl Host for PinlockView<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = &message[..message.floor_char_boundary(MAX_LINE)];
        let job = self.db.job_id();
        match level {
            Level::Trace => tracing::trace!(target: "pinlock::guest", job, "{message}"),
            Level::Debug => tracing::debug!(target: "pinlock::guest", job, "{message}"),
            Level::Info => tracing::info!(target: "pinlock::guest", job, "{message}"),
            Level::Warn => tracing::warn!(target: "pinlock::guest", job, "{message}"),
            Level::Error => tracing::error!(target: "pinlock::guest", job, "{message}"),
        }
        Ok(())
    }
}
