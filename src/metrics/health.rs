//! PURE: what the keeper's health endpoints answer (Patroni's `/health`, `/primary`,
//! `/replica`, `/read-only`, for load balancers and probes), from a [`KeeperView`]: the
//! keeper's last look at its PostgreSQL and the last clusterdata it read. No clock and no I/O:
//! `now` comes in, on the clock the view's times are on (CLOCK_BOOTTIME, see `board.rs`).
//!
//! A 200 always rests on recent knowledge ([`KeeperView::stale_after`], for a look at
//! PostgreSQL plus [`KeeperView::look_allowance`]): a keeper that stops hearing from its
//! PostgreSQL stops vouching for it, and a master cut off from the store answers 503 on
//! /primary by its fence deadline, not forever.

use crate::cluster::{DbRole, DbUid};
use serde::Serialize;
use std::time::Duration;

/// One health check: a request's path and `lag` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// PostgreSQL runs and accepts connections.
    Health,
    /// The elected master, running as a primary (takes writes).
    Primary,
    /// A standby streaming from a db of this cluster, at most `max_lag` bytes behind when
    /// given.
    Replica { max_lag: Option<u64> },
    /// A primary or a replica (or the head of a standby cluster): takes reads.
    ReadOnly { max_lag: Option<u64> },
}

/// The checks a path names (`None`: not a health path). Patroni's aliases are kept so that
/// configurations written for it work unchanged.
pub(super) fn route(path: &str, query: Option<&str>) -> Option<Result<Check, LagError>> {
    let check = match path {
        "/health" => Ok(Check::Health),
        "/primary" | "/master" | "/read-write" => Ok(Check::Primary),
        "/replica" => lag_param(query).map(|max_lag| Check::Replica { max_lag }),
        "/read-only" => lag_param(query).map(|max_lag| Check::ReadOnly { max_lag }),
        _ => return None,
    };
    Some(check)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum LagError {
    #[error(
        "lag={0:?} is not a size: give bytes (lag=1048576) or a whole number with a unit B, kB, MB, GB or TB (lag=16MB)"
    )]
    Invalid(String),
    #[error("lag={0:?} is more bytes than can be counted")]
    TooLarge(String),
}

/// The `lag` parameter of a query string (other parameters are ignored, as Patroni's are
/// when they do not apply).
fn lag_param(query: Option<&str>) -> Result<Option<u64>, LagError> {
    let Some(query) = query else { return Ok(None) };
    match query.split('&').find_map(|pair| pair.strip_prefix("lag=")) {
        Some(value) => parse_lag(value).map(Some),
        None => Ok(None),
    }
}

/// A byte count as PostgreSQL writes memory sizes: a whole number, optionally followed by a
/// unit `B`, `kB`, `MB`, `GB` or `TB` (1024-based). Units are taken in any case (`16mb`):
/// nothing else could be meant, and a health check refused for a lower-case letter would take
/// a server out of the pool.
pub(super) fn parse_lag(text: &str) -> Result<u64, LagError> {
    let invalid = || LagError::Invalid(text.to_string());
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(invalid());
    }
    let factor: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return Err(invalid()),
    };
    let too_large = || LagError::TooLarge(text.to_string());
    let n: u64 = number.parse().map_err(|_| too_large())?;
    n.checked_mul(factor).ok_or_else(too_large)
}

/// What the keeper last saw, as the endpoints read it. Times are on one clock that keeps
/// counting while the machine is suspended (CLOCK_BOOTTIME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeeperView {
    /// The cluster name (`--cluster-name`).
    pub(super) cluster: String,
    pub(super) keeper_uid: String,
    /// The keeper's PostgreSQL process runs (its loop's view, updated on every start and
    /// stop, so a crash shows at once rather than at the next look).
    pub(super) running: bool,
    /// The last look at the running PostgreSQL; none since it last started or stopped.
    pub(super) observed: Option<Observation>,
    pub(super) clusterdata: Option<ClusterView>,
    /// When the last keeper info publication that reached the store was sent: a master's
    /// fence deadline counts from it.
    pub(super) published_at: Option<Duration>,
    /// Knowledge older than this backs no 200 (see [`stale_after`]).
    pub(super) stale_after: Duration,
    /// How much older than `stale_after` a look may be: the publisher takes one before each
    /// publication, which waits up to the store timeout when etcd is out of reach, and a
    /// standby must not flap out of a read pool for that (the other checks still bound /primary).
    pub(super) look_allowance: Duration,
}

/// One look at the running PostgreSQL (the keeper's info publisher takes one every
/// `publish_every`, whether or not the store then takes the info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When the look started: the state is at least this old.
    pub at: Duration,
    /// The db in PGDATA.
    pub db_uid: DbUid,
    /// It accepted a connection and answered every query.
    pub accepting: bool,
    pub in_recovery: bool,
    pub timeline: u64,
    /// A primary's flushed WAL position; a standby's furthest of received and replayed (what
    /// the keeper publishes as xLogPos).
    pub x_log_pos: u64,
}

/// What the last clusterdata read says about this keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterView {
    /// When the read returned.
    pub(super) read_at: Duration,
    /// This keeper's db; none when the sentinel gave it none.
    pub(super) db: Option<AssignedDb>,
    /// The elected master's xLogPos as its keeper last published it.
    pub(super) master_x_log_pos: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AssignedDb {
    pub(super) uid: DbUid,
    pub(super) role: DbRole,
    /// `cluster.status.master` names this db.
    pub(super) elected: bool,
    pub(super) follows: Follows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Follows {
    Nothing,
    /// A db of this cluster (one in the clusterdata).
    ClusterDb,
    /// A primary outside the cluster: this db heads a standby cluster.
    External,
}

/// The freshness bound: three sleepIntervals (two looks may be missed, the third must have
/// come), and never past the fence deadline: a master that has not reached the store for
/// `fence_after` is killed by its fence, and /primary must have said 503 by then.
pub(super) fn stale_after(sleep_interval: Duration, fence_after: Duration) -> Duration {
    sleep_interval.saturating_mul(3).min(fence_after)
}

/// PostgreSQL as the body's `state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum PgState {
    /// Accepting connections at a recent look.
    Running,
    /// The process runs but has not accepted connections at the last look (starting up, in
    /// crash recovery, or hung), or has not been looked at yet.
    Starting,
    Stopped,
    /// The last look is older than the freshness bound (with the look allowance).
    Unknown,
}

/// The db's role in the clusterdata, as the body's `role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RoleName {
    Master,
    Standby,
    None,
}

/// The JSON every health endpoint answers. Field names are documented in README.md and
/// stay as they are; `null` means "not known".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Body<'a> {
    pub(super) state: PgState,
    pub(super) role: RoleName,
    pub(super) in_recovery: Option<bool>,
    pub(super) db_uid: Option<&'a str>,
    pub(super) timeline: Option<u64>,
    pub(super) xlog_pos: Option<u64>,
    /// Standbys only (the key is absent otherwise): bytes behind the master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) lag: Option<Option<u64>>,
    pub(super) cluster: &'a str,
    pub(super) keeper_uid: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer<'a> {
    /// 200 when true, 503 otherwise.
    pub(super) ok: bool,
    pub(super) body: Body<'a>,
}

/// The answer to `check` from `view` at `now`.
pub(super) fn answer(check: Check, view: &KeeperView, now: Duration) -> Answer<'_> {
    let fresh = |at: Duration| now.saturating_sub(at) <= view.stale_after;
    let looked = view.observed.as_ref().filter(|_| view.running);
    let look_bound = view.stale_after.saturating_add(view.look_allowance);
    let recent = looked.filter(|o| now.saturating_sub(o.at) <= look_bound);
    let accepting = recent.filter(|o| o.accepting);
    let state = match (view.running, looked, recent) {
        (false, _, _) => PgState::Stopped,
        (true, None, _) => PgState::Starting,
        (true, Some(_), None) => PgState::Unknown,
        (true, Some(_), Some(o)) if o.accepting => PgState::Running,
        (true, Some(_), Some(_)) => PgState::Starting,
    };
    let cd = view.clusterdata.as_ref();
    let fresh_cd = cd.filter(|c| fresh(c.read_at));
    let assigned = cd.and_then(|c| c.db.as_ref());
    // What the clusterdata says counts only for the db PostgreSQL runs (not one a resync is
    // about to replace).
    let running_db = assigned.filter(|d| accepting.is_some_and(|o| o.db_uid == d.uid));
    let lag = match (assigned, accepting) {
        (Some(d), Some(o)) if d.role == DbRole::Standby => fresh_cd
            .and_then(|c| c.master_x_log_pos)
            .filter(|_| d.follows == Follows::ClusterDb)
            .map(|m| m.saturating_sub(o.x_log_pos)),
        _ => None,
    };
    let in_recovery = |want: bool| accepting.is_some_and(|o| o.in_recovery == want);

    let primary = in_recovery(false)
        && fresh_cd.is_some()
        && running_db.is_some_and(|d| d.role == DbRole::Master && d.elected)
        && view.published_at.is_some_and(fresh);
    // A standby keeps running while the store is out of reach, and a load balancer may keep
    // reading from it; a lag bound needs the master's position, so a fresh clusterdata.
    let replica = |max_lag: Option<u64>| {
        in_recovery(true)
            && running_db
                .is_some_and(|d| d.role == DbRole::Standby && d.follows == Follows::ClusterDb)
            && max_lag.is_none_or(|max| lag.is_some_and(|l| l <= max))
    };
    let standby_cluster_head = in_recovery(true)
        && running_db.is_some_and(|d| d.role == DbRole::Standby && d.follows == Follows::External);
    let ok = match check {
        Check::Health => accepting.is_some(),
        Check::Primary => primary,
        Check::Replica { max_lag } => replica(max_lag),
        Check::ReadOnly { max_lag } => primary || standby_cluster_head || replica(max_lag),
    };

    let role = match assigned.map(|d| d.role) {
        Some(DbRole::Master) => RoleName::Master,
        Some(DbRole::Standby) => RoleName::Standby,
        Some(DbRole::Undefined) | None => RoleName::None,
    };
    let body = Body {
        state,
        role,
        in_recovery: accepting.map(|o| o.in_recovery),
        db_uid: assigned
            .map(|d| d.uid.as_str())
            .or(looked.map(|o| o.db_uid.as_str()))
            .filter(|u| !u.is_empty()),
        timeline: accepting.map(|o| o.timeline),
        xlog_pos: accepting.map(|o| o.x_log_pos),
        lag: (role == RoleName::Standby).then_some(lag),
        cluster: &view.cluster,
        keeper_uid: &view.keeper_uid,
    };
    Answer { ok, body }
}
