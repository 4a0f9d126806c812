//! Poison-tolerant locking. Every mutex in this crate guards plain data (counters, instants,
//! small state records) that stays valid even if a holder panicked, so a poisoned lock is used
//! as it is instead of taking the whole process down with a second panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
