//! Fuzz targets for what the keeper writes (see src/cluster/fuzz_tests.rs): postgresql.conf
//! parses back to exactly the parameters given, whatever their names and values (an entry
//! that cannot be one line is left out, never split into several), and pg_hba.conf gets one
//! line per rule, the keeper's own first.

use super::*;
use crate::cluster::fuzz_tests::fuzz_config;
use crate::cluster::{SuReplAccessMode, check_hba_line, is_parameter_name, is_parameter_value};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// PostgreSQL's reading of `name = 'value'` lines (guc-file.l): `''` and backslash escapes in
/// quotes; `#` lines are comments.
fn parse_conf(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line
            .split_once(" = ")
            .ok_or(format!("no ' = ' in {line:?}"))?;
        let quoted = rest
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .ok_or(format!("value not quoted in {line:?}"))?;
        let mut value = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => match chars.next() {
                    Some('\'') => value.push('\''),
                    _ => return Err(format!("a lone quote ends the value early in {line:?}")),
                },
                '\\' => value.push(chars.next().ok_or("trailing backslash")?),
                c => value.push(c),
            }
        }
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("{name} set twice"));
        }
    }
    Ok(out)
}

fn hba_params<'a>(spec_hba: &'a [String], trust: &'a [String]) -> HbaParams<'a> {
    HbaParams {
        su_username: "postgres",
        su_auth: AuthMethod::ScramSha256,
        repl_username: "repl",
        repl_auth: AuthMethod::Trust,
        access_mode: SuReplAccessMode::All,
        is_master: true,
        other_db_addresses: &[],
        spec_hba: Some(spec_hba),
        trust_networks: trust,
        internal_only: false,
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn fuzz_postgresql_conf_round_trips_and_never_gains_lines(
        params in prop::collection::btree_map(
            prop_oneof!["[a-z_][a-z0-9_]{0,10}(\\.[a-z_]{1,6})?", "\\PC{0,10}", ".{0,10}"],
            prop_oneof!["\\PC{0,16}", ".{0,16}", "[\\\\'\"#= \n\r\t]{0,6}"],
            0..8,
        )
    ) {
        let text = render_postgresql_conf(&params);
        let parsed = parse_conf(&text).map_err(TestCaseError::fail)?;
        let expected: BTreeMap<String, String> = params
            .into_iter()
            .filter(|(k, v)| is_parameter_name(k) && is_parameter_value(v))
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn fuzz_pg_hba_has_one_line_per_rule_the_keepers_first(
        lines in prop::collection::vec(
            prop_oneof![
                "(host|hostssl|local) (all|app) (all|u) ([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2} (md5|trust|scram-sha-256)",
                "\\PC{0,30}",
                ".{0,30}",
            ],
            0..5,
        ),
    ) {
        let accepted: Vec<String> = lines.into_iter().filter(|l| check_hba_line(l).is_ok()).collect();
        let rendered = render_pg_hba(&hba_params(&accepted, &[]));
        prop_assert!(rendered.iter().all(|l| !l.contains(['\n', '\r'])));
        prop_assert_eq!(&rendered[rendered.len() - accepted.len()..], &accepted[..]);
        let own = &rendered[..rendered.len() - accepted.len()];
        prop_assert!(own.iter().all(|l| l.contains("postgres") || l.contains("repl")));
        // Trust stays on this host: no rule opens the replication user to every address.
        prop_assert!(!own.iter().any(|l| l.contains("repl") && l.contains("0.0.0.0/0")));
    }
}
