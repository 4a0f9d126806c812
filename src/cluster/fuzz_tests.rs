//! Fuzz targets (property tests with generated input, run in CI like every test): the cluster
//! spec and clusterdata parsers never panic on any input, and what they accept survives a
//! round trip and the checks that follow. `STOLON_FUZZ_CASES` sets the number of inputs (1000
//! by default; raise it for a longer local run).

use super::*;
use proptest::prelude::*;

pub(crate) fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("STOLON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        // A failure is shrunk and kept in proptest-regressions/ like any property test's.
        ..ProptestConfig::default()
    }
}

/// JSON values shaped like a spec: known field names (and some unknown ones) with values of
/// every JSON type, nested a little.
pub(crate) fn spec_like_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[0-9]{1,4}(ms|s|m|h|MB|GB)?".prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![Just("new"), Just("existing"), Just("pitr"), Just("standby")]
            .prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_.]{1,10}|\\PC{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        prop::sample::select(input::TOP_LEVEL_FIELDS.to_vec()).prop_map(String::from),
        "[a-zA-Z]{1,12}",
    ];
    prop::collection::btree_map(key, value, 0..8).prop_map(|mut m| {
        m.entry("initMode".into())
            .or_insert_with(|| serde_json::Value::from("new"));
        serde_json::Value::Object(m.into_iter().collect())
    })
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn fuzz_parsers_never_panic_on_any_text(text in "\\PC{0,200}") {
        let _ = ClusterSpec::from_json(&text);
        let _ = parse_spec_input(&text);
        let _ = ClusterData::from_json(text.as_bytes());
        let _ = check_hba_line(&text);
    }

    #[test]
    fn fuzz_accepted_specs_round_trip_and_check(doc in spec_like_json()) {
        let text = doc.to_string();
        if let Ok(spec) = ClusterSpec::from_json(&text) {
            // Checks answer; they never panic.
            let valid = spec.validate().is_ok();
            let _ = spec.check_input();
            let again = ClusterSpec::from_json(&serde_json::to_string(&spec).unwrap()).unwrap();
            prop_assert_eq!(&again, &spec);
            if valid {
                let defaults = spec.with_defaults();
                prop_assert!(defaults.validate().is_ok());
                let cd = ClusterData::new("c0ffee00".into(), spec, chrono::Utc::now());
                let back = ClusterData::from_json(&cd.to_json()).unwrap();
                prop_assert_eq!(back, cd);
            }
        }
        let _ = parse_spec_input(&text);
    }
}
