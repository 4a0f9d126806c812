//! The campaign for sentinel leadership, in its own task, so a check in
//! progress never blocks on the election and a follower takes over as soon as etcd lets it.

use crate::metrics::SentinelMetrics;
use crate::store::Election;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a leader re-checks that it still is one (a cheap, local check: the store marks
/// the election deposed when the lease or the leader key is lost).
const LEADER_POLL: Duration = Duration::from_millis(250);
/// Upstream waits 10 s after a failed campaign; a shorter pause hands over leadership faster
/// once etcd is back.
const CAMPAIGN_RETRY: Duration = Duration::from_secs(1);

/// Campaigns until `shutdown`. `terms` counts leadership changes (won or lost), so the check
/// loop wakes on each (a new leader acts at once, on the memory it kept as a follower) and can
/// tell a new term from the one it knew.
pub(crate) async fn campaign_loop(
    election: Election,
    terms: watch::Sender<u64>,
    metrics: SentinelMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let won = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = election.campaign() => r,
        };
        if let Err(e) = won {
            tracing::warn!(error = %e, "sentinel leader campaign failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CAMPAIGN_RETRY) => continue,
            }
        }
        metrics.leadership(true);
        terms.send_modify(|t| *t += 1);
        while election.is_leader() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LEADER_POLL) => {}
            }
        }
        tracing::warn!(sentinel = %election.candidate(), "sentinel leadership lost");
        metrics.leadership(false);
        terms.send_modify(|t| *t += 1);
    }
}
