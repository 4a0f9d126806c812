//! When a request to the store last succeeded, for the `stolon_store_last_success_seconds`
//! metric (src/metrics/store.rs). Wall-clock time: it is only shown, nothing is timed by it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shared by every clone of a [`Store`](super::Store) and by whatever reads it; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LastContact(Arc<AtomicU64>);

impl LastContact {
    /// A request just succeeded.
    pub(crate) fn touch(&self) {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.0.store(millis, Ordering::Relaxed);
    }

    /// `None` until a request succeeds.
    pub fn get(&self) -> Option<SystemTime> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(UNIX_EPOCH + Duration::from_millis(millis)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_until_touched_then_now() {
        let c = LastContact::default();
        assert_eq!(c.get(), None);
        let before = SystemTime::now() - Duration::from_millis(1);
        c.clone().touch();
        assert!(
            c.get()
                .is_some_and(|t| t >= before && t <= SystemTime::now())
        );
    }
}
