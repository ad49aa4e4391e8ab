//! A job's stderr: the last [`TAIL`] bytes kept for the job's error report,
//! and each line forwarded to the host's log (tagged with the job id, at
//! most [`MAX_FORWARDED_LINES`] lines a job). Writes always succeed: a guest
//! that prints without end loses its oldest output, never its stderr (a Rust
//! guest panics when a write to stderr fails, and the job would trap).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of stderr kept per job.
pub(crate) const TAIL: usize = 16 << 10;
/// Lines of a job's stderr forwarded to the host's log; the rest are only
/// counted.
pub(crate) const MAX_FORWARDED_LINES: u32 = 200;
/// Longest line forwarded; longer ones are cut.
const MAX_LINE: usize = 4096;

/// The stderr of one job (cheap to clone: every clone writes to the same tail).
#[derive(Clone)]
pub(crate) struct StderrTail {
    job: u64,
    inner: Arc<Mutex<Tail>>,
}

#[derive(Default)]
struct Tail {
    /// The last bytes written, oldest first, at most [`TAIL`].
    kept: std::collections::VecDeque<u8>,
    /// The line being written (not yet ended by `\n`).
    line: Vec<u8>,
    forwarded: u32,
    dropped_lines: u64,
}

impl StderrTail {
    pub(crate) fn new(job: u64) -> Self {
        Self { job, inner: Arc::new(Mutex::new(Tail::default())) }
    }

    /// The last bytes written.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.inner.lock().map(|tail| tail.kept.iter().copied().collect()).unwrap_or_default()
    }

    fn write(&self, bytes: &[u8]) {
        let Ok(mut tail) = self.inner.lock() else {
            return;
        };
        let tail = &mut *tail;
        if bytes.len() >= TAIL {
            tail.kept.clear();
            tail.kept.extend(&bytes[bytes.len() - TAIL..]);
        } else {
            let overflow = (tail.kept.len() + bytes.len()).saturating_sub(TAIL);
            tail.kept.drain(..overflow);
            tail.kept.extend(bytes);
        }
        for &byte in bytes {
            if byte == b'\n' {
                self.forward(tail);
            } else if tail.line.len() < MAX_LINE {
                tail.line.push(byte);
            }
        }
    }

    fn forward(&self, tail: &mut Tail) {
        let line = String::from_utf8_lossy(&tail.line).into_owned();
        tail.line.clear();
        if tail.forwarded < MAX_FORWARDED_LINES {
            tail.forwarded += 1;
            tracing::info!(target: "pinlock::guest::stderr", job = self.job, "{line}");
        } else {
            tail.dropped_lines += 1;
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        if self.dropped_lines > 0 {
            tracing::info!(target: "pinlock::guest::stderr", dropped = self.dropped_lines, "further stderr lines not logged");
        }
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        StderrTail::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(TAIL)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrTail {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        StderrTail::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_and_never_refuses_a_write() {
        let tail = StderrTail::new(1);
        for i in 0..10_000 {
            tail.write(format!("line {i}\n").as_bytes());
        }
        let kept = tail.contents();
        assert_eq!(kept.len(), TAIL);
        assert!(String::from_utf8_lossy(&kept).ends_with("line 9999\n"));
        tail.write(&vec![b'x'; 3 * TAIL]);
        assert_eq!(tail.contents(), vec![b'x'; TAIL]);
    }
}
