//! `stolonctl status [-f text|json]`: sentinels, proxies, keepers and the master, in
//! upstream's text sections or its JSON shape.

use super::{CtlError, connect, read_cluster_data};
use crate::cluster::{
    ClusterData, DbUid, Generation, KeeperUid, ProxiesInfo, SentinelInfo, Switchover,
};
use crate::store::StoreConfig;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StatusFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Output format
    #[arg(short = 'f', long = "format", value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

/// Upstream's JSON shape, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub sentinels: Vec<SentinelStatus>,
    pub proxies: Vec<ProxyStatus>,
    pub keepers: Vec<KeeperStatus>,
    pub cluster: ClusterStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentinelStatus {
    pub uid: String,
    pub leader: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    pub uid: String,
    pub generation: Generation,
    /// Addition: the proxy also serves read-only clients (`--read-only-port`).
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeeperStatus {
    pub uid: KeeperUid,
    pub listen_address: String,
    pub healthy: bool,
    pub pg_healthy: bool,
    pub pg_wanted_generation: Generation,
    pub pg_current_generation: Generation,
    /// Addition: the keeper's `--priority`.
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub available: bool,
    pub master_keeper_uid: KeeperUid,
    pub master_db_uid: DbUid,
    /// Addition: maintenance mode (`stolonctl pause`).
    pub paused: bool,
    /// Addition: the planned switchover under way, or the last one's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switchover: Option<Switchover>,
}

pub fn build_status(
    cd: &ClusterData,
    sentinels: &[SentinelInfo],
    leader: Option<&str>,
    proxies: &ProxiesInfo,
) -> Status {
    let mut sentinels: Vec<SentinelStatus> = sentinels
        .iter()
        .map(|s| SentinelStatus {
            uid: s.uid.clone(),
            leader: leader == Some(s.uid.as_str()),
        })
        .collect();
    sentinels.sort_by(|a, b| a.uid.cmp(&b.uid));
    // ProxiesInfo is a BTreeMap: already sorted by uid.
    let proxies = proxies
        .values()
        .map(|p| ProxyStatus {
            uid: p.uid.clone(),
            generation: p.generation,
            read_only: p.read_only,
        })
        .collect();
    let keepers = cd
        .keepers
        .values()
        .map(|k| {
            let db = cd.db_of_keeper(&k.uid);
            KeeperStatus {
                uid: k.uid.clone(),
                listen_address: match db {
                    None => "(no db assigned)".into(),
                    Some(db) if db.status.listen_address.is_empty() => "(unknown)".into(),
                    Some(db) => format!("{}:{}", db.status.listen_address, db.status.port),
                },
                healthy: k.status.healthy,
                pg_healthy: db.is_some_and(|db| db.status.healthy),
                pg_wanted_generation: db.map_or(Generation::ZERO, |db| db.generation),
                pg_current_generation: db
                    .map_or(Generation::ZERO, |db| db.status.current_generation),
                priority: k.status.priority(),
            }
        })
        .collect();
    let master = cd.master_db();
    Status {
        sentinels,
        proxies,
        keepers,
        cluster: ClusterStatus {
            available: true,
            master_keeper_uid: master
                .map(|db| db.spec.keeper_uid.clone())
                .unwrap_or_default(),
            master_db_uid: master.map(|db| db.uid.clone()).unwrap_or_default(),
            paused: cd.cluster.spec.paused(),
            switchover: cd.cluster.status.switchover.clone(),
        },
    }
}

/// Upstream's sections; columns aligned with tabs as Go's tabwriter does.
pub fn render_text(status: &Status, cd: &ClusterData) -> String {
    let mut out = String::new();
    out.push_str("=== Active sentinels ===\n\n");
    if status.sentinels.is_empty() {
        out.push_str("No active sentinels\n");
    } else {
        let mut rows = vec![vec!["ID".to_string(), "LEADER".to_string()]];
        rows.extend(
            status
                .sentinels
                .iter()
                .map(|s| vec![s.uid.clone(), s.leader.to_string()]),
        );
        out.push_str(&tabulate(&rows));
    }
    out.push_str("\n=== Active proxies ===\n\n");
    if status.proxies.is_empty() {
        out.push_str("No active proxies\n");
    } else {
        let mut rows = vec![vec!["ID".to_string(), "READ-ONLY".to_string()]];
        rows.extend(
            status
                .proxies
                .iter()
                .map(|p| vec![p.uid.clone(), p.read_only.to_string()]),
        );
        out.push_str(&tabulate(&rows));
    }
    out.push_str("\n=== Keepers ===\n\n");
    if status.keepers.is_empty() {
        out.push_str("No keepers available\n\n");
    } else {
        let mut rows = vec![
            [
                "UID",
                "HEALTHY",
                "PG LISTENADDRESS",
                "PG HEALTHY",
                "PG WANTEDGENERATION",
                "PG CURRENTGENERATION",
                "PRIORITY",
            ]
            .map(String::from)
            .to_vec(),
        ];
        rows.extend(status.keepers.iter().map(|k| {
            vec![
                k.uid.to_string(),
                k.healthy.to_string(),
                k.listen_address.clone(),
                k.pg_healthy.to_string(),
                k.pg_wanted_generation.to_string(),
                k.pg_current_generation.to_string(),
                k.priority.to_string(),
            ]
        }));
        out.push_str(&tabulate(&rows));
    }
    out.push_str("\n=== Cluster Info ===\n\n");
    if status.cluster.paused {
        out.push_str("Paused: yes (no failover, no standby changes: stolonctl resume)\n");
    }
    if let Some(sw) = &status.cluster.switchover {
        out.push_str(&format!(
            "Switchover: {} (db {} -> db {}, requested {}){}\n",
            sw.stage,
            sw.from_db,
            sw.to_db,
            sw.requested_at.format("%Y-%m-%d %H:%M:%S UTC"),
            if sw.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", sw.reason)
            }
        ));
    }
    // Upstream prints "No cluster available" here when there is no master yet, although the
    // cluster exists (it is initialising or failing over): say what is true instead.
    if status.cluster.master_keeper_uid.is_empty() {
        out.push_str("Master Keeper: (none)\n");
    } else {
        out.push_str(&format!(
            "Master Keeper: {}\n",
            status.cluster.master_keeper_uid
        ));
        out.push_str("\n===== Keepers/DB tree =====\n\n");
        tree(&mut out, cd, &status.cluster.master_db_uid, 0, "", true);
    }
    out.push('\n');
    out
}

/// Cells padded with tabs to a common width (tab stops of 8, one cell of padding).
fn tabulate(rows: &[Vec<String>]) -> String {
    const TAB: usize = 8;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            let w = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                + 1;
            w.div_ceil(TAB) * TAB
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count();
                out.push_str(&"\t".repeat(pad.div_ceil(TAB)));
            }
        }
        out.push('\n');
    }
    out
}

/// The master and its followers, recursively, as upstream's printTree.
fn tree(
    out: &mut String,
    cd: &ClusterData,
    db_uid: &DbUid,
    level: usize,
    prefix: &str,
    tail: bool,
) {
    // A follower removed by `removekeeper` may still be listed until the sentinel catches up.
    let Some(db) = cd.dbs.get(db_uid) else {
        return;
    };
    let mut line = prefix.to_string();
    if level > 0 {
        line.push_str(if tail { "└─" } else { "├─" });
    }
    line.push_str(db.spec.keeper_uid.as_str());
    if cd.cluster.status.master.as_ref() == Some(db_uid) {
        line.push_str(" (master)");
    }
    out.push_str(&line);
    out.push('\n');
    let n = db.spec.followers.len();
    for (i, f) in db.spec.followers.iter().enumerate() {
        let extra = if tail {
            if level > 0 { "  " } else { "" }
        } else {
            "│ "
        };
        tree(
            out,
            cd,
            f,
            level + 1,
            &format!("{prefix}{extra}"),
            i + 1 == n,
        );
    }
}

pub(super) async fn run(args: StatusArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    let leader = store.leader().await?;
    let sentinels = store.get_sentinels_info().await?;
    let proxies = store.get_proxies_info().await?;
    let cd = read_cluster_data(&store).await?.value;
    let status = build_status(&cd, &sentinels, leader.as_deref(), &proxies);
    match args.format {
        StatusFormat::Json => {
            // Tab indentation, as upstream's json.MarshalIndent(v, "", "\t").
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            status
                .serialize(&mut ser)
                .map_err(|e| CtlError::Io(format!("cannot encode status: {e}")))?;
            println!("{}", String::from_utf8_lossy(&buf));
        }
        StatusFormat::Text => print!("{}", render_text(&status, &cd)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSpec, Db, DbSpec, Keeper};

    fn cd_with(dbs: &[(&str, &str, &[&str])], master: &str) -> ClusterData {
        let mut cd = ClusterData::new(
            "c".into(),
            ClusterSpec::default(),
            crate::cluster::zero_time(),
        );
        for (uid, keeper, followers) in dbs {
            let db = Db {
                uid: (*uid).into(),
                spec: DbSpec {
                    keeper_uid: (*keeper).into(),
                    followers: followers.iter().map(|f| (*f).into()).collect(),
                    ..Default::default()
                },
                ..Default::default()
            };
            cd.dbs.insert((*uid).into(), db);
            let k = Keeper {
                uid: (*keeper).into(),
                ..Default::default()
            };
            cd.keepers.insert((*keeper).into(), k);
        }
        cd.cluster.status.master = Some(master.into());
        cd
    }

    #[test]
    fn tree_draws_followers_and_cascades() {
        let cd = cd_with(
            &[
                ("d1", "k1", &["d2", "d3"]),
                ("d2", "k2", &["d4"]),
                ("d3", "k3", &[]),
                ("d4", "k4", &[]),
            ],
            "d1",
        );
        let mut out = String::new();
        tree(&mut out, &cd, &"d1".into(), 0, "", true);
        assert_eq!(out, "k1 (master)\n├─k2\n│ └─k4\n└─k3\n");
    }

    #[test]
    fn keeper_without_db_and_no_master() {
        let mut cd = cd_with(&[], "");
        let k = Keeper {
            uid: "k9".into(),
            ..Default::default()
        };
        cd.keepers.insert("k9".into(), k);
        let s = build_status(&cd, &[], None, &ProxiesInfo::new());
        assert_eq!(s.keepers[0].listen_address, "(no db assigned)");
        assert_eq!(s.cluster.master_keeper_uid, "");
        assert!(render_text(&s, &cd).contains("Master Keeper: (none)"));
    }

    #[test]
    fn columns_line_up_on_tab_stops() {
        let rows = vec![
            vec!["ID".to_string(), "LEADER".to_string()],
            vec!["0123456789".to_string(), "true".to_string()],
        ];
        assert_eq!(tabulate(&rows), "ID\t\tLEADER\n0123456789\ttrue\n");
    }
}
