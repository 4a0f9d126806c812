//! The parameters a PostgreSQL server knows, from its own `--describe-config`: checked before
//! the keeper writes the spec's pgParameters, so that a typo (`shared_buffer`) is reported and
//! left out instead of making every later start of every node fail.

use std::collections::BTreeMap;

/// Parameter name → its type (`BOOLEAN`, `INTEGER`, `REAL`, `STRING`, `ENUM`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerParameters(BTreeMap<String, String>);

impl ServerParameters {
    /// `--describe-config` output: one tab-separated line per parameter, name first and type
    /// fourth.
    pub fn parse(text: &str) -> ServerParameters {
        ServerParameters(
            text.lines()
                .filter_map(|l| {
                    let mut fields = l.split('\t');
                    let name = fields.next()?;
                    let vartype = fields.nth(2)?;
                    (!name.is_empty()).then(|| (name.to_lowercase(), vartype.to_string()))
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Why PostgreSQL would refuse `name = value` at start, if it would. Names with a dot are
    /// an extension's (placeholders PostgreSQL accepts before the extension is loaded);
    /// booleans are checked as PostgreSQL parses them; other values are left to the server.
    pub fn check(&self, name: &str, value: &str) -> Result<(), String> {
        if name.contains('.') {
            return Ok(());
        }
        let Some(vartype) = self.0.get(&name.to_lowercase()) else {
            let near = crate::cluster::closest(name, self.0.keys().map(String::as_str))
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown parameter {name:?}{near}: this PostgreSQL does not have it"
            ));
        };
        if vartype == "BOOLEAN" && !is_boolean(value) {
            return Err(format!(
                "{name} is a boolean; {value:?} is not (on, off, true, false, yes, no, 1, 0)"
            ));
        }
        Ok(())
    }
}

/// PostgreSQL's parse_bool: on/off, or any unique prefix of true/false/yes/no, or 1/0, in any
/// case and with surrounding white space.
fn is_boolean(value: &str) -> bool {
    let v = value.trim().to_lowercase();
    if matches!(v.as_str(), "on" | "off" | "1" | "0") {
        return true;
    }
    !v.is_empty()
        && ["true", "false", "yes", "no"]
            .iter()
            .any(|word| word.starts_with(&v))
        && v != "o"
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBED: &str = "work_mem\tuser\tResource Usage / Memory\tINTEGER\t4096\t64\t2147483647\tSets the maximum memory.\t\n\
        fsync\tsighup\tWrite-Ahead Log / Settings\tBOOLEAN\ton\t\t\tForces synchronization.\t\n\
        shared_buffers\tpostmaster\tResource Usage / Memory\tINTEGER\t1024\t16\t1073741823\tSets the shared buffers.\t\n";

    #[test]
    fn unknown_names_and_bad_booleans_are_refused_with_a_hint() {
        let p = ServerParameters::parse(DESCRIBED);
        assert_eq!(p.check("work_mem", "8MB"), Ok(()));
        assert_eq!(p.check("Work_Mem", "8MB"), Ok(()));
        assert_eq!(p.check("pg_stat_statements.max", "1000"), Ok(()));
        let e = p.check("shared_buffer", "1GB").unwrap_err();
        assert!(e.contains("did you mean \"shared_buffers\""), "{e}");
        assert!(p.check("no_such_thing_at_all", "1").is_err());
        for ok in ["on", "OFF", "t", "tru", "y", "no", "1", " false "] {
            assert_eq!(p.check("fsync", ok), Ok(()), "{ok}");
        }
        for bad in ["o", "maybe", "2", ""] {
            assert!(p.check("fsync", bad).is_err(), "{bad}");
        }
    }
}
