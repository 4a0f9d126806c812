//! Name resolution of the master's address, once per change of address: a failing or slow
//! lookup must not cut sessions to a master that still answers.

use super::Checker;
use crate::cluster::DbUid;
use crate::proxy::route::Destination;
use crate::proxy::target::NoTarget;
use tokio_util::sync::CancellationToken;

impl Checker {
    /// The master `db_uid` at `addr` (`host:port`) as a destination, or why there is none (its
    /// name does not resolve). `None` on shutdown.
    pub(super) async fn master_destination(
        &mut self,
        db_uid: DbUid,
        addr: String,
        shutdown: &CancellationToken,
    ) -> Option<(Option<Destination>, NoTarget)> {
        // ⚠ upstream returns without publishing when the address does not resolve; we publish
        // anyway: acknowledging a generation while routing nowhere is safe and keeps the
        // sentinel's view of live proxies accurate.
        let cached = self
            .resolved
            .as_ref()
            .filter(|(name, _)| *name == addr)
            .map(|(_, a)| Ok(*a));
        let resolved = match cached {
            Some(hit) => hit,
            None => self.guarded(resolve(&addr), shutdown).await?,
        };
        Some(match resolved {
            Ok(a) => {
                self.resolved = Some((addr, a));
                (Some(Destination { db_uid, addr: a }), NoTarget::Switching)
            }
            Err(e) => (
                None,
                NoTarget::Unresolvable {
                    db_uid,
                    addr,
                    reason: e.to_string(),
                },
            ),
        })
    }
}

pub(super) async fn resolve(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for this name")
    })
}
