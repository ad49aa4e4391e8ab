//! `wasi:logging/logging@0.1.0-draft`: the same log as `pinlock:host/logging`,
//! with the line's `context` as a field; `critical` is written at error level.

use super::PinlockView;
use super::logging::write_line;
use super::standard::wasi::logging::logging::{Host, Level};

impl Host for PinlockView<'_> {
    async fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error | Level::Critical => tracing::Level::ERROR,
        };
        write_line(self.db.job_id(), level, &context, &message);
        Ok(())
    }
}
