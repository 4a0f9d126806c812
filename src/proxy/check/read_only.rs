//! The read-only side of the check: which standbys read-only clients go to (or the master, as a
//! fallback), applied on every check before the acknowledgement like the master's route, and a
//! listener that follows the read-write one (opened after a successful check, closed or refusing
//! while failing closed).

use super::{CheckError, Checker, resolve};
use crate::cluster::ClusterData;
use crate::proxy::listen::Listening;
use crate::proxy::read_only::{ReadOnlyRouter, ReadOnlyTargets};
use crate::proxy::route::Destination;
use crate::proxy::standbys::readable_standbys;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub(crate) struct ReadOnlySide {
    router: ReadOnlyRouter,
    listening: Listening,
    /// `--read-only-fallback-master`.
    fallback_master: bool,
    /// For the bind error message.
    listen_on: String,
    /// Standby addresses resolved (`host:port` as clusterdata has it → address), so a name is
    /// looked up once per change, as the master's.
    resolved: BTreeMap<String, SocketAddr>,
    has_listened: bool,
}

impl ReadOnlySide {
    pub(crate) fn new(
        router: ReadOnlyRouter,
        listening: Listening,
        fallback_master: bool,
        listen_on: String,
    ) -> Self {
        ReadOnlySide {
            router,
            listening,
            fallback_master,
            listen_on,
            resolved: BTreeMap::new(),
            has_listened: false,
        }
    }
}

impl Checker {
    /// The standbys read-only clients may go to now, resolved; a standby whose name does not
    /// resolve is left out. Empty without a read-only side. `None` on shutdown.
    pub(super) async fn readable_standbys(
        &mut self,
        cd: Option<&ClusterData>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Destination>> {
        let Some(side) = &self.read_only else {
            return Some(Vec::new());
        };
        let mut cache = side.resolved.clone();
        let mut resolved = BTreeMap::new();
        let mut out = Vec::new();
        for standby in cd.map(readable_standbys).unwrap_or_default() {
            let addr = match cache.remove(&standby.addr) {
                Some(hit) => Ok(hit),
                None => self.guarded(resolve(&standby.addr), shutdown).await?,
            };
            match addr {
                Ok(a) => {
                    resolved.insert(standby.addr, a);
                    out.push(Destination {
                        db_uid: standby.db_uid,
                        addr: a,
                    });
                }
                Err(e) => {
                    tracing::debug!(db = %standby.db_uid, addr = %standby.addr, error = %e, "cannot resolve a standby's address; no read-only clients for it");
                }
            }
        }
        if let Some(side) = &mut self.read_only {
            side.resolved = resolved;
        }
        Some(out)
    }

    /// Sends read-only clients to `standbys`, or to `master` (the one routed now) when none
    /// qualifies and the fallback is on, or refuses them. Sessions to any db no longer among
    /// these are closed before this returns.
    pub(super) async fn route_read_only(
        &mut self,
        standbys: Vec<Destination>,
        master: Option<Destination>,
    ) {
        let Some(side) = &mut self.read_only else {
            return;
        };
        let targets = ReadOnlyTargets {
            fallback: master.filter(|_| standbys.is_empty() && side.fallback_master),
            standbys,
        };
        if !side.router.switch(&targets).await {
            return;
        }
        match (&targets.standbys[..], &targets.fallback) {
            ([], Some(m)) => tracing::info!(
                db = %m.db_uid, addr = %m.addr,
                "no standby qualifies: read-only clients go to the master"
            ),
            ([], None) => tracing::info!("no standby qualifies: refusing read-only clients"),
            (standbys, _) => {
                let dbs: Vec<String> = standbys.iter().map(|d| d.db_uid.to_string()).collect();
                tracing::info!(standbys = ?dbs, "read-only clients go to the standbys");
            }
        }
        self.publish_status();
    }

    /// Closes every read-only session and refuses new read-only clients (fail-closed, unusable
    /// clusterdata, shutdown).
    pub(super) async fn close_read_only(&mut self) {
        self.route_read_only(Vec::new(), None).await;
    }

    pub(super) fn start_read_only_handed(&mut self) {
        if let Some(side) = &mut self.read_only {
            side.listening.start_handed();
        }
    }

    /// Closes the read-only socket if the proxy owns it (a handed one keeps refusing clients).
    pub(super) async fn close_read_only_listener(&mut self) {
        if let Some(side) = &mut self.read_only {
            side.listening.close().await;
        }
    }

    pub(super) async fn stop_read_only_listener(&mut self) {
        if let Some(side) = &mut self.read_only {
            side.listening.stop().await;
        }
    }

    /// Binds the owned read-only socket if it is not open.
    pub(super) async fn ensure_read_only_listener(&mut self) -> Result<(), CheckError> {
        let Some(side) = &mut self.read_only else {
            return Ok(());
        };
        if let Err(source) = side.listening.ensure().await {
            return Err(CheckError::Listen {
                addr: side.listen_on.clone(),
                flags: "--read-only-listen-address/--read-only-port",
                source,
            });
        }
        if !side.has_listened && side.listening.is_listening() {
            side.has_listened = true;
            tracing::info!(addr = ?side.listening.local_addr(), "listening for read-only clients");
        }
        Ok(())
    }

    /// The read-only part of the status line: where its clients go.
    pub(super) fn read_only_status(&self) -> String {
        let Some(side) = &self.read_only else {
            return String::new();
        };
        if !side.listening.is_listening() {
            return "; read-only: not listening".into();
        }
        let now = side.router.current();
        match (now.standbys.len(), now.fallback) {
            (0, Some(m)) => format!(
                "; read-only: to the master {} (no standby qualifies)",
                m.addr
            ),
            (0, None) => "; read-only: refusing connections (no standby qualifies)".into(),
            (1, _) => "; read-only: to 1 standby".into(),
            (n, _) => format!("; read-only: to {n} standbys"),
        }
    }
}
