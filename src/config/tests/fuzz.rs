//! Fuzz target for the TOML file layer (see src/cluster/fuzz_tests.rs): any file content, and
//! any value for any flag, gives a configuration or a one-line error naming what is wrong;
//! never a panic.

use super::*;
use crate::cluster::fuzz_tests::fuzz_config;
use proptest::prelude::*;

fn build_all(loaded: &Loaded) {
    let _ = loaded.log_settings();
    let _ = crate::store::StoreConfig::from_loaded(loaded);
    let _ = loaded.metrics_listen_address();
    match loaded.role() {
        Role::Keeper => drop(crate::keeper::KeeperConfig::from_loaded(loaded)),
        Role::Proxy => drop(crate::proxy::ProxyConfig::from_loaded(loaded)),
        Role::Sentinel => drop(crate::sentinel::SentinelConfig::from_loaded(loaded)),
        Role::Ctl => {}
    }
}

fn check_file(role: Role, text: &str) -> Result<(), TestCaseError> {
    let f = toml_file(text);
    match load(role, &[], &[], Some(f.path())) {
        Ok(loaded) => build_all(&loaded),
        Err(e) => {
            let line = e.to_string();
            prop_assert!(!line.contains('\n'), "multi-line error: {line:?}");
        }
    }
    Ok(())
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![Role::Keeper, Role::Sentinel, Role::Proxy, Role::Ctl])
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn fuzz_any_config_file_text(role in role(), text in "\\PC{0,120}") {
        check_file(role, &text)?;
    }

    #[test]
    fn fuzz_any_value_for_any_flag(
        role in role(),
        entries in prop::collection::vec(
            (
                prop::sample::select(
                    Role::Keeper.flags().chain(Role::Proxy.flags()).map(|f| f.name).collect::<Vec<_>>()
                ),
                prop_oneof![
                    "\\PC{0,16}".prop_map(|s| format!("{s:?}")),
                    any::<i64>().prop_map(|i| i.to_string()),
                    any::<bool>().prop_map(|b| b.to_string()),
                    prop::collection::vec("[a-z:/0-9.]{0,12}", 0..3).prop_map(|v| format!("{v:?}")),
                ],
            ),
            0..8,
        ),
    ) {
        let mut text = String::new();
        for (flag, value) in entries {
            text.push_str(&format!("{flag} = {value}\n"));
        }
        check_file(role, &text)?;
    }
}
