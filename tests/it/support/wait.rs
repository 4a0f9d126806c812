//! Waiting on a condition with a deadline, polling; never a bare fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `cond` every 100 ms until it holds; panics naming `what` after `timeout`.
pub(crate) fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Polls `f` every 100 ms until it yields a value; panics naming `what` after `timeout`.
pub(crate) fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks that `cond` holds at every poll for the whole `window` (an absence check: something
/// must NOT happen); panics naming `what` at the first poll where it does not hold.
pub(crate) fn stays_true(window: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < window {
        if !cond() {
            panic!("after {:?}: no longer true: {what}", start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// In async tests: awaits `cond` every 50 ms until it holds; panics naming `what` after
/// `timeout`.
pub(crate) async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
