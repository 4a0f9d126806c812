//! The keeper's passwords: flag, file or systemd credential, exactly one of them.

use super::error::{ConfigError, invalid};
use super::flags::FlagDef;
use super::loaded::Loaded;
use crate::postgres::AuthMethod;
use std::path::Path;

impl Loaded {
    /// Exactly one of password / password file unless the method is trust (then neither). With
    /// neither given, the systemd credential named like the password flag (`pg-su-password`,
    /// `pg-repl-password`) is used when `$CREDENTIALS_DIRECTORY` holds it.
    pub(crate) fn password(
        &self,
        who: &str,
        method: AuthMethod,
        pw_flag: &'static FlagDef,
        file_flag: &'static FlagDef,
        method_flag: &'static FlagDef,
    ) -> Result<Option<String>, ConfigError> {
        let inline = self.get(pw_flag);
        let file = self.get(file_flag);
        let credential = self.credential(pw_flag);
        let (pw_flag, file_flag, method_flag) = (pw_flag.name, file_flag.name, method_flag.name);
        if inline.is_some() && self.on_command_line.contains(&pw_flag) {
            tracing::warn!(
                "--{pw_flag} on the command line is visible to every local user (ps); prefer --{file_flag} or a systemd credential named {pw_flag}"
            );
        }
        if method == AuthMethod::Trust {
            if inline.is_some() || file.is_some() {
                return Err(invalid(
                    method_flag,
                    format!(
                        "{who} auth method is trust but a password was given (drop --{pw_flag}/--{file_flag})"
                    ),
                ));
            }
            return Ok(None);
        }
        match (inline, file) {
            (Some(_), Some(_)) => Err(invalid(
                file_flag,
                format!("give only one of --{pw_flag} and --{file_flag}"),
            )),
            (Some(pw), None) => Ok(Some(pw)),
            (None, Some(path)) => read_password_file(Path::new(&path), who)
                .map(Some)
                .map_err(|r| invalid(file_flag, r)),
            (None, None) => match credential {
                Some(path) => read_password_file(&path, who)
                    .map(Some)
                    .map_err(|r| invalid(pw_flag, format!("systemd credential: {r}"))),
                None => Err(invalid(
                    pw_flag,
                    format!(
                        "a {who} password is required with auth method {}: set --{pw_flag} or --{file_flag}, or pass a systemd credential named {pw_flag} (LoadCredential=)",
                        method.as_hba()
                    ),
                )),
            },
        }
    }
}

/// Reads a password file as upstream does: warns when others can read it, strips trailing
/// newlines with a warning (editors add one) and refuses an empty password.
pub fn read_password_file(path: &Path, who: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {who} password file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "{who} password file permissions are too open; use 0600 or stricter"
        );
    }
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {who} password file {}: {e}", path.display()))?;
    let trimmed = raw.trim_end_matches(['\r', '\n']);
    if trimmed.len() != raw.len() {
        tracing::warn!(file = %path.display(), "{who} password contains trailing new line, removing");
    }
    if trimmed.is_empty() {
        return Err(format!(
            "{who} password file {} is empty after removing trailing new line",
            path.display()
        ));
    }
    Ok(trimmed.to_string())
}
