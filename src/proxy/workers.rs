//! The threads client sessions run on: one single-threaded runtime per CPU, each accepting on its
//! own copy of every listening socket. A session's two directions, its timers and its wakeups
//! then stay on one thread; on the shared multi-threaded runtime each forwarded message could
//! wake another worker thread, which measurably cost CPU per transaction (bench/proxy).
//!
//! The control side (store checks, route switches, systemd) stays on the main runtime; it reaches
//! sessions through the route's watch channel and cancellation tokens, which work across runtimes.

use std::io;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub(crate) struct SessionWorkers {
    handles: Vec<Handle>,
    /// Cancelled on drop: each thread then returns, dropping its runtime and so every session
    /// left on it. The threads are not joined: dropping may happen on a runtime thread, which
    /// must not block.
    done: CancellationToken,
}

impl SessionWorkers {
    /// One worker per CPU available to the process (its cgroup and affinity limits included).
    pub(crate) fn start() -> io::Result<SessionWorkers> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(n)
    }

    pub(crate) fn with_threads(n: usize) -> io::Result<SessionWorkers> {
        let done = CancellationToken::new();
        let mut workers = SessionWorkers {
            handles: Vec::with_capacity(n),
            done: done.clone(),
        };
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("proxy-sessions-{i}"))
                .spawn(move || runtime.block_on(done.cancelled()))?;
        }
        Ok(workers)
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The worker that runs the `i`th copy of a listening socket.
    pub(crate) fn handle(&self, i: usize) -> &Handle {
        &self.handles[i % self.handles.len()]
    }
}

impl Drop for SessionWorkers {
    fn drop(&mut self) {
        self.done.cancel();
    }
}
