//! The command line: a role's flag table as clap arguments.

use super::error::ConfigError;
use super::flags::FlagKind;
use super::role::{Role, RoleMarker};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// The role's flags as given on the command line (and only those: no clap defaults, so
/// "given" is known and the lower layers can fill the rest).
#[derive(Debug, Clone)]
pub struct Flags<R> {
    pub given: BTreeMap<&'static str, String>,
    _role: PhantomData<R>,
}

impl<R> Default for Flags<R> {
    fn default() -> Self {
        Flags {
            given: BTreeMap::new(),
            _role: PhantomData,
        }
    }
}

impl<R: RoleMarker> clap::FromArgMatches for Flags<R> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for def in R::ROLE.flags() {
            if let Ok(Some(v)) = m.try_get_one::<String>(def.name) {
                self.given.insert(def.name, v.clone());
            }
        }
        Ok(())
    }
}

impl<R: RoleMarker> clap::Args for Flags<R> {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        // stolonctl's flags work before and after the sub-command, as cobra's persistent flags.
        let global = R::ROLE == Role::Ctl;
        for def in R::ROLE.flags() {
            let help = match def.default {
                Some(d) => format!("{} [default: {d}]", def.help),
                None => def.help.to_string(),
            };
            let mut arg = clap::Arg::new(def.name)
                .long(def.name)
                .help(help)
                .value_name("VALUE")
                .hide(def.hidden)
                .global(global)
                .action(clap::ArgAction::Set)
                // Repeating a flag: the last one wins, as with Go's flag package.
                .overrides_with(def.name);
            if def.kind == FlagKind::Bool {
                arg = arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_name("BOOL");
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Turns a clap error into the one-line form every other error has; help and version are
/// printed and the process exits 0, as clap would.
pub fn usage_error(e: clap::Error) -> ConfigError {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The message is the first paragraph (the usage and tips follow a blank line).
    let text = e.to_string();
    let message = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError::Usage(message.trim_start_matches("error: ").to_string())
}
