//! The host's threads, called shards: each runs a current-thread tokio
//! runtime, so a job, its WebAssembly and the I/O of the sessions it uses
//! stay on one thread and wake each other without crossing threads (see
//! `docs/design/threads.md`). Shard 0 is the thread that started the
//! command; [`start`] adds the others, and [`spawn`] spreads work over all
//! of them in turn. Code that runs off any shard thread (the test suite, a
//! program embedding the library on its own runtime) counts as shard 0 and
//! spawns on its own runtime.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static SHARDS: OnceLock<Shards> = OnceLock::new();

/// The shard the calling thread is (0 off any shard thread).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Makes `main` (the calling thread's runtime) shard 0 and starts `count - 1`
/// more shard threads, each with a current-thread runtime of its own. Once
/// per process; a second call changes nothing.
pub fn start(main: Handle, count: usize) -> std::io::Result<()> {
    if SHARDS.get().is_some() {
        return Ok(());
    }
    let mut handles = vec![main];
    for index in 1..count.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new().name(format!("pinlock-shard-{index}")).spawn(move || {
            CURRENT.with(|current| current.set(index));
            // Runs the tasks spawned onto it until the process ends.
            runtime.block_on(std::future::pending::<()>());
        })?;
    }
    let _ = SHARDS.set(Shards { handles, next: AtomicUsize::new(0) });
    Ok(())
}

/// How many shards run work (1 until [`start`] added more).
pub fn count() -> usize {
    SHARDS.get().map_or(1, |shards| shards.handles.len())
}

/// Runs `task` on the next shard in turn, or on the caller's runtime when
/// there is only one shard.
pub fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match SHARDS.get() {
        Some(shards) if shards.handles.len() > 1 => {
            let next = shards.next.fetch_add(1, Ordering::Relaxed) % shards.handles.len();
            shards.handles[next].spawn(task)
        }
        _ => tokio::spawn(task),
    }
}
