//! The etcd key layout (upstream stolon's), and the reverse mapping from a key to a watch event.

use super::StoreEvent;
use crate::cluster::KeeperUid;

const CLUSTERDATA: &str = "clusterdata";
const KEEPERS_INFO: &str = "keepers/info/";
const SENTINELS_INFO: &str = "sentinels/info/";
const PROXIES_INFO: &str = "proxies/info/";
const SENTINEL_LEADER: &str = "sentinel-leader";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paths {
    cluster: String,
}

impl Paths {
    /// Upstream builds the path with Go's `filepath.Join(prefix, cluster)`: a leading `/` stays
    /// (etcd v3 keys are a flat namespace, so `/stolon/cluster` and `stolon/cluster` are different
    /// clusters), while doubled and trailing slashes are cleaned away.
    pub(crate) fn new(prefix: &str, cluster_name: &str) -> Paths {
        Paths {
            cluster: go_path_join(prefix, cluster_name),
        }
    }

    pub(crate) fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Everything under the cluster: the trailing `/` keeps cluster `a` from seeing cluster `ab`.
    pub(crate) fn cluster_dir(&self) -> String {
        format!("{}/", self.cluster)
    }

    pub(crate) fn cluster_data(&self) -> String {
        format!("{}/{CLUSTERDATA}", self.cluster)
    }

    pub(crate) fn keepers_info_dir(&self) -> String {
        format!("{}/{KEEPERS_INFO}", self.cluster)
    }

    pub(crate) fn keeper_info(&self, uid: &KeeperUid) -> String {
        format!("{}{uid}", self.keepers_info_dir())
    }

    pub(crate) fn sentinels_info_dir(&self) -> String {
        format!("{}/{SENTINELS_INFO}", self.cluster)
    }

    pub(crate) fn sentinel_info(&self, uid: &str) -> String {
        format!("{}{uid}", self.sentinels_info_dir())
    }

    pub(crate) fn proxies_info_dir(&self) -> String {
        format!("{}/{PROXIES_INFO}", self.cluster)
    }

    pub(crate) fn proxy_info(&self, uid: &str) -> String {
        format!("{}{uid}", self.proxies_info_dir())
    }

    /// The election name; etcd's election service puts candidates at `<name>/<lease-hex>`.
    pub(crate) fn sentinel_leader(&self) -> String {
        format!("{}/{SENTINEL_LEADER}", self.cluster)
    }

    /// Which event a change of `key` is; `None` for keys that are not ours.
    pub(crate) fn classify(&self, key: &str, deleted: bool) -> Option<StoreEvent> {
        let rest = key.strip_prefix(&self.cluster)?.strip_prefix('/')?;
        if rest == CLUSTERDATA {
            return Some(StoreEvent::ClusterData);
        }
        if let Some(uid) = rest.strip_prefix(KEEPERS_INFO) {
            return Some(StoreEvent::KeeperInfo {
                uid: KeeperUid::from(uid),
                deleted,
            });
        }
        if let Some(uid) = rest.strip_prefix(SENTINELS_INFO) {
            return Some(StoreEvent::SentinelInfo {
                uid: uid.to_string(),
                deleted,
            });
        }
        if let Some(uid) = rest.strip_prefix(PROXIES_INFO) {
            return Some(StoreEvent::ProxyInfo {
                uid: uid.to_string(),
                deleted,
            });
        }
        if rest
            .strip_prefix(SENTINEL_LEADER)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        {
            return Some(StoreEvent::Leader);
        }
        None
    }
}

/// Go's `path.Join` + `path.Clean` for the two-element case (no `..` games in store prefixes
/// beyond what Clean resolves).
fn go_path_join(prefix: &str, name: &str) -> String {
    // Join skips empty elements, so an empty prefix does not make the path absolute.
    let joined = match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{name}"),
    };
    let absolute = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let body = parts.join("/");
    match (absolute, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_upstream() {
        let p = Paths::new("stolon/cluster", "smoke");
        assert_eq!(p.cluster(), "stolon/cluster/smoke");
        assert_eq!(p.cluster_data(), "stolon/cluster/smoke/clusterdata");
        assert_eq!(
            p.keeper_info(&"k1".into()),
            "stolon/cluster/smoke/keepers/info/k1"
        );
        assert_eq!(
            p.sentinel_info("58419a5e"),
            "stolon/cluster/smoke/sentinels/info/58419a5e"
        );
        assert_eq!(
            p.proxy_info("5b6bbdba"),
            "stolon/cluster/smoke/proxies/info/5b6bbdba"
        );
        assert_eq!(p.sentinel_leader(), "stolon/cluster/smoke/sentinel-leader");
    }

    #[test]
    fn prefix_is_kept_but_cleaned_like_go() {
        assert_eq!(
            Paths::new("/stolon/cluster", "a").cluster(),
            "/stolon/cluster/a"
        );
        assert_eq!(
            Paths::new("/stolon//cluster/", "a").cluster(),
            "/stolon/cluster/a"
        );
        assert_eq!(Paths::new("", "a").cluster(), "a");
        assert_eq!(Paths::new("x/../y", "a").cluster(), "y/a");
    }

    #[test]
    fn classify_keys() {
        let p = Paths::new("stolon/cluster", "a");
        assert_eq!(
            p.classify("stolon/cluster/a/clusterdata", false),
            Some(StoreEvent::ClusterData)
        );
        assert_eq!(
            p.classify("stolon/cluster/a/keepers/info/k1", true),
            Some(StoreEvent::KeeperInfo {
                uid: "k1".into(),
                deleted: true
            })
        );
        assert_eq!(
            p.classify("stolon/cluster/a/sentinels/info/s1", false),
            Some(StoreEvent::SentinelInfo {
                uid: "s1".into(),
                deleted: false
            })
        );
        assert_eq!(
            p.classify("stolon/cluster/a/proxies/info/p1", false),
            Some(StoreEvent::ProxyInfo {
                uid: "p1".into(),
                deleted: false
            })
        );
        assert_eq!(
            p.classify("stolon/cluster/a/sentinel-leader/694d8a1b2c3d4e5f", false),
            Some(StoreEvent::Leader)
        );
        assert_eq!(p.classify("stolon/cluster/ab/clusterdata", false), None);
        assert_eq!(p.classify("stolon/cluster/a/other", false), None);
        assert_eq!(p.classify("stolon/cluster/a/sentinel-leaderx", false), None);
    }
}
