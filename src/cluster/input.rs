//! What a spec handed in by an operator (`stolonctl init`, `stolonctl update`, the sentinel's
//! `--initial-cluster-spec`) must pass on top of what a stored spec must: no unknown field (a
//! typo would otherwise silently do nothing), timings that keep the cluster working, no
//! parameter the keeper manages, and pg_hba lines PostgreSQL will accept. A stored spec
//! (upstream's among them) is read more leniently so that a cluster never stops over it.

use super::GoDuration;
use super::spec::{ClusterSpec, SpecError, is_managed_parameter};

/// The shortest sleepInterval and proxyCheckInterval: below it keepers, sentinels and proxies
/// load etcd with requests and the host with wake-ups for no faster failover.
const MIN_INTERVAL: GoDuration = GoDuration::from_millis(100);

/// Parses an operator's spec; unknown fields are refused with the closest known name.
pub fn parse_spec_input(text: &str) -> Result<ClusterSpec, SpecError> {
    // Errors that name the field path come from the normal parse; the second pass, which
    // cannot fail where the first did not, only collects the fields serde ignored.
    let spec = ClusterSpec::from_json(text)?;
    let mut unknown = Vec::new();
    let de = &mut serde_json::Deserializer::from_str(text);
    let _: Result<ClusterSpec, _> = serde_ignored::deserialize(de, |path| {
        // "?" marks an Option's inside: `newConfig.?.locale` is `newConfig.locale`.
        let path = path.to_string();
        let parts: Vec<&str> = path.split('.').filter(|p| *p != "?").collect();
        unknown.push(parts.join("."));
    });
    if let Some(path) = unknown.first() {
        return Err(SpecError(unknown_field_message(path)));
    }
    Ok(spec)
}

fn unknown_field_message(path: &str) -> String {
    let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
    let known = known_fields(parent);
    match closest(field, known.iter().copied()) {
        Some(near) => format!("unknown field {path:?}: did you mean {near:?}?"),
        None => format!("unknown field {path:?}"),
    }
}

/// The JSON names of the spec's fields, at the top level and in its nested objects.
fn known_fields(parent: &str) -> &'static [&'static str] {
    match parent.rsplit('.').next().unwrap_or(parent) {
        "" => TOP_LEVEL_FIELDS,
        "newConfig" => &["locale", "encoding", "dataChecksums"],
        "pitrConfig" => &[
            "dataRestoreCommand",
            "archiveRecoverySettings",
            "recoveryTargetSettings",
        ],
        "archiveRecoverySettings" => &["restoreCommand"],
        "recoveryTargetSettings" => &[
            "recoveryTarget",
            "recoveryTargetLsn",
            "recoveryTargetName",
            "recoveryTargetTime",
            "recoveryTargetXid",
            "recoveryTargetTimeline",
        ],
        "existingConfig" => &["keeperUID"],
        "standbyConfig" => &["standbySettings", "archiveRecoverySettings"],
        "standbySettings" => &[
            "primaryConnInfo",
            "primarySlotName",
            "recoveryMinApplyDelay",
        ],
        _ => &[],
    }
}

pub(super) const TOP_LEVEL_FIELDS: &[&str] = &[
    "sleepInterval",
    "requestTimeout",
    "convergenceTimeout",
    "initTimeout",
    "syncTimeout",
    "dbWaitReadyTimeout",
    "failInterval",
    "deadKeeperRemovalInterval",
    "proxyCheckInterval",
    "proxyTimeout",
    "maxStandbys",
    "maxStandbysPerSender",
    "maxStandbyLag",
    "synchronousReplication",
    "minSynchronousStandbys",
    "maxSynchronousStandbys",
    "additionalWalSenders",
    "additionalMasterReplicationSlots",
    "usePgrewind",
    "initMode",
    "mergePgParameters",
    "role",
    "newConfig",
    "pitrConfig",
    "existingConfig",
    "standbyConfig",
    "defaultSUReplAccessMode",
    "pgParameters",
    "pgHBA",
    "automaticPgRestart",
    "maxSlotWalKeepSize",
    "paused",
];

/// The known name nearest to `field` (edit distance at most a third of its length, case
/// ignored), if any is near enough to be a typo.
pub fn closest<'a>(field: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = field.to_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= (field.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

impl ClusterSpec {
    /// The stricter rules for a spec an operator hands in (see the module documentation).
    pub fn check_input(&self) -> Result<(), SpecError> {
        self.validate()?;
        self.check_fence_timing()?;
        for (name, value) in [
            ("sleepInterval", self.sleep_interval()),
            ("proxyCheckInterval", self.proxy_check_interval()),
        ] {
            if value < MIN_INTERVAL {
                return Err(SpecError(format!(
                    "{name} ({value}) must be at least {MIN_INTERVAL}"
                )));
            }
        }
        for (name, value) in [
            ("requestTimeout", self.request_timeout()),
            ("dbWaitReadyTimeout", self.db_wait_ready_timeout()),
            ("failInterval", self.fail_interval()),
        ] {
            if value.is_zero() {
                return Err(SpecError(format!("{name} must be greater than 0")));
            }
        }
        if let Some(params) = &self.pg_parameters
            && let Some(name) = params.keys().find(|n| is_managed_parameter(n))
        {
            return Err(SpecError(format!(
                "pgParameters: {name:?} is set by the keeper and cannot be given (see README, \
                 \"managed parameters\")"
            )));
        }
        for line in self.pg_hba.iter().flatten() {
            check_hba_line(line).map_err(|why| SpecError(format!("pgHBA {line:?}: {why}")))?;
        }
        Ok(())
    }
}

const HBA_METHODS: &[&str] = &[
    "trust",
    "reject",
    "scram-sha-256",
    "md5",
    "password",
    "gss",
    "sspi",
    "ident",
    "peer",
    "ldap",
    "radius",
    "cert",
    "pam",
    "bsd",
];

/// One pg_hba.conf line as PostgreSQL parses it (`pg_hba.conf` in its documentation):
/// `local DATABASE USER METHOD [OPTIONS]` or `host* DATABASE USER ADDRESS METHOD [OPTIONS]`,
/// the address a CIDR, an address and a netmask, a host name or all/samehost/samenet; options
/// are `name=value`. Comment-only and blank lines pass; include directives do not (they would
/// read files the keeper does not manage).
pub fn check_hba_line(line: &str) -> Result<(), String> {
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err("control characters are not allowed".into());
    }
    let tokens = hba_tokens(line)?;
    let Some((kind, rest)) = tokens.split_first() else {
        return Ok(());
    };
    let host = matches!(
        kind.as_str(),
        "host" | "hostssl" | "hostnossl" | "hostgssenc" | "hostnogssenc"
    );
    if kind != "local" && !host {
        return Err(format!(
            "unknown connection type {kind:?} (local, host, hostssl, hostnossl, hostgssenc or hostnogssenc)"
        ));
    }
    let mut rest = rest.iter();
    let (Some(_database), Some(_user)) = (rest.next(), rest.next()) else {
        return Err("missing database or user field".into());
    };
    if host {
        let Some(address) = rest.next() else {
            return Err("missing address field".into());
        };
        check_hba_address(address)?;
        // An address without /prefix may be followed by a netmask.
        if !address.contains('/')
            && address.parse::<std::net::IpAddr>().is_ok()
            && let Some(mask) = rest.clone().next()
            && mask.parse::<std::net::IpAddr>().is_ok()
        {
            rest.next();
        }
    }
    let Some(method) = rest.next() else {
        return Err("missing authentication method".into());
    };
    if !HBA_METHODS.contains(&method.as_str()) {
        return Err(format!("unknown authentication method {method:?}"));
    }
    if method == "peer" && host {
        return Err("peer authentication is only for local connections".into());
    }
    for option in rest {
        if !option.contains('=') {
            return Err(format!(
                "authentication option {option:?} is not name=value"
            ));
        }
    }
    Ok(())
}

fn check_hba_address(address: &str) -> Result<(), String> {
    if matches!(address, "all" | "samehost" | "samenet") {
        return Ok(());
    }
    if let Some((ip, bits)) = address.split_once('/') {
        let max = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return Err(format!("invalid IP address {ip:?}")),
        };
        return match bits.parse::<u8>() {
            Ok(b) if b <= max => Ok(()),
            _ => Err(format!("invalid CIDR mask in address {address:?}")),
        };
    }
    if address.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    // A host name (or .domain suffix).
    let name = address.strip_prefix('.').unwrap_or(address);
    if !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        Ok(())
    } else {
        Err(format!("invalid address {address:?}"))
    }
}

/// Whitespace separated tokens; double quotes group (and `""` is a quote inside them); `#`
/// outside quotes starts a comment.
fn hba_tokens(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            '#' if !quoted => break,
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    tokens.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            c => {
                current.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quoted string".into());
    }
    if in_token {
        tokens.push(current);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_with_the_closest_known_one() {
        let e = parse_spec_input(r#"{"initMode":"new","synchronousReplicaton":true}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"synchronousReplicaton\"")
                && e.contains("did you mean \"synchronousReplication\""),
            "{e}"
        );
        let e = parse_spec_input(r#"{"initMode":"new","newConfig":{"lcoale":"C"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("newConfig.lcoale") && e.contains("\"locale\""),
            "{e}"
        );
        let e = parse_spec_input(r#"{"initMode":"new","zzz":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"zzz\"") && !e.contains("did you mean"), "{e}");
        assert!(parse_spec_input(r#"{"initMode":"new","maxStandbys":3}"#).is_ok());
        // Type errors keep their field path.
        let e = parse_spec_input(r#"{"initMode":"new","maxStandbys":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("maxStandbys"), "{e}");
    }

    #[test]
    fn top_level_field_list_matches_the_spec() {
        let full = ClusterSpec::from_json(r#"{"initMode":"new"}"#)
            .unwrap()
            .with_defaults();
        let mut full = serde_json::to_value(full).unwrap();
        let obj = full.as_object_mut().unwrap();
        for f in TOP_LEVEL_FIELDS {
            obj.remove(*f);
        }
        assert!(
            obj.is_empty(),
            "fields missing from TOP_LEVEL_FIELDS: {obj:?}"
        );
    }

    #[test]
    fn input_rules_name_the_field_and_the_rule() {
        let check = |json: &str| {
            parse_spec_input(json)
                .and_then(|s| s.check_input())
                .map_err(|e| e.to_string())
        };
        assert!(check(r#"{"initMode":"new"}"#).is_ok());
        for (json, want) in [
            (
                r#"{"initMode":"new","sleepInterval":"10ms"}"#,
                "sleepInterval",
            ),
            (
                r#"{"initMode":"new","proxyCheckInterval":"1ms"}"#,
                "proxyCheckInterval",
            ),
            (
                r#"{"initMode":"new","requestTimeout":"0s"}"#,
                "requestTimeout",
            ),
            (
                r#"{"initMode":"new","dbWaitReadyTimeout":"0s"}"#,
                "dbWaitReadyTimeout",
            ),
            (r#"{"initMode":"new","failInterval":"0s"}"#, "failInterval"),
            (
                r#"{"initMode":"new","pgParameters":{"port":"5433"}}"#,
                "\"port\" is set by the keeper",
            ),
            (
                r#"{"initMode":"new","pgParameters":{"synchronous_standby_names":"*"}}"#,
                "synchronous_standby_names",
            ),
            (
                r#"{"initMode":"new","pgHBA":["host all all 10.0.0.0/33 md5"]}"#,
                "invalid CIDR mask",
            ),
        ] {
            let e = check(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn hba_lines_are_checked_as_postgresql_parses_them() {
        for ok in [
            "host all all 0.0.0.0/0 md5",
            "hostssl app \"my user\" 10.0.0.0/8 scram-sha-256 clientcert=verify-full",
            "host all all 192.168.1.0 255.255.255.0 md5",
            "host all all .example.com md5",
            "host all all samenet trust",
            "local all all peer",
            "local replication repl scram-sha-256 # comment",
            "# only a comment",
            "",
        ] {
            assert_eq!(check_hba_line(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("hots all all 0.0.0.0/0 md5", "unknown connection type"),
            ("host all all 0.0.0.0/0", "missing authentication method"),
            (
                "host all all 0.0.0.0/0 md55",
                "unknown authentication method",
            ),
            ("host all all 10.0.0.300/8 md5", "invalid IP address"),
            ("host all", "missing database or user"),
            ("local all all", "missing authentication method"),
            ("host all all 0.0.0.0/0 peer", "only for local"),
            ("host all all 0.0.0.0/0 md5 clientcert", "name=value"),
            ("host all \"all 0.0.0.0/0 md5", "unterminated"),
            ("include other.conf", "unknown connection type"),
        ] {
            let e = check_hba_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
