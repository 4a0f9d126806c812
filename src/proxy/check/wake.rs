//! What wakes the check loop: a store event, the check timer, or the watchdog's heartbeat.

use crate::store::StoreEvent;
use crate::systemd::Notifier;
use tokio::sync::mpsc;

pub(super) enum Wake {
    ClusterData,
    Other,
    Closed,
    Timer,
}

pub(super) async fn next_event(events: &mut Option<mpsc::Receiver<StoreEvent>>) -> Wake {
    let Some(rx) = events.as_mut() else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Some(StoreEvent::ClusterData) => Wake::ClusterData,
        Some(_) => Wake::Other,
        None => Wake::Closed,
    }
}

/// Completes after the systemd watchdog's loop interval; never without a watchdog.
pub(super) async fn heartbeat(notifier: &Notifier) {
    match notifier.watchdog_interval() {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}
