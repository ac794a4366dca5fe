//! The official postgres image's environment: `POSTGRES_USER`, `POSTGRES_PASSWORD`,
//! `POSTGRES_DB`, each also readable from a file named by `*_FILE` (Docker and Kubernetes
//! secrets). Pure: the environment and the file system come in as functions, so the rules
//! are unit-tested without touching either.

use std::{io, path::Path};

use super::Error;

/// What `init` and `provision` need to know about the application's role and database.
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
    pub db: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

impl Credentials {
    /// Resolves from the process environment and the real file system.
    pub fn from_env() -> Result<Self, Error> {
        Self::resolve(|k| std::env::var(k).ok(), |p| std::fs::read_to_string(p))
    }

    /// `POSTGRES_USER` defaults to `postgres` and `POSTGRES_DB` to the user, as in the
    /// official image. The password is optional here; `provision` requires it for a role
    /// it has to create.
    pub fn resolve(
        var: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> io::Result<String>,
    ) -> Result<Self, Error> {
        let user = lookup("POSTGRES_USER", &var, &read)?.unwrap_or_else(|| "postgres".to_owned());
        let password = lookup("POSTGRES_PASSWORD", &var, &read)?;
        let db = lookup("POSTGRES_DB", &var, &read)?.unwrap_or_else(|| user.clone());
        if user.contains('\0') {
            return Err(Error::InvalidSetting {
                var: "POSTGRES_USER",
                reason: "contains a NUL byte",
            });
        }
        if db.contains('\0') {
            return Err(Error::InvalidSetting {
                var: "POSTGRES_DB",
                reason: "contains a NUL byte",
            });
        }
        if password.as_deref().is_some_and(|p| p.contains('\0')) {
            return Err(Error::InvalidSetting {
                var: "POSTGRES_PASSWORD",
                reason: "contains a NUL byte",
            });
        }
        Ok(Credentials { user, password, db })
    }
}

/// `VAR` or the contents of the file named by `VAR_FILE`, never both. An empty `VAR`
/// counts as unset (compose files often write `VAR=`). A `_FILE` that is missing or empty
/// is an error naming the variable and the path: silently falling back to a default
/// would start a database with credentials the user did not choose.
fn lookup(
    name: &'static str,
    var: &impl Fn(&str) -> Option<String>,
    read: &impl Fn(&Path) -> io::Result<String>,
) -> Result<Option<String>, Error> {
    let file_var = file_var_name(name);
    let direct = var(name).filter(|v| !v.is_empty());
    let file = var(file_var).filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(Error::AmbiguousSecret { var: name }),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let path = Path::new(&path);
            let contents = read(path).map_err(|source| Error::ReadSecret {
                var: file_var,
                path: path.to_owned(),
                source,
            })?;
            // `$(< file)` in the official entrypoint drops trailing newlines; editors add one.
            let value = contents.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(Error::EmptySecret {
                    var: file_var,
                    path: path.to_owned(),
                });
            }
            Ok(Some(value.to_owned()))
        }
    }
}

fn file_var_name(name: &'static str) -> &'static str {
    match name {
        "POSTGRES_USER" => "POSTGRES_USER_FILE",
        "POSTGRES_PASSWORD" => "POSTGRES_PASSWORD_FILE",
        "POSTGRES_DB" => "POSTGRES_DB_FILE",
        _ => unreachable!("only the three official variables have a _FILE form"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(vars: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Credentials, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Credentials::resolve(
            |k| vars.get(k).cloned(),
            |p| {
                files
                    .get(p.to_str().unwrap())
                    .cloned()
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
            },
        )
    }

    #[test]
    fn defaults_follow_the_official_image() {
        let c = resolve(&[], &[]).unwrap();
        assert_eq!(
            (c.user.as_str(), c.password, c.db.as_str()),
            ("postgres", None, "postgres")
        );
        let c = resolve(&[("POSTGRES_USER", "agent")], &[]).unwrap();
        assert_eq!(c.db, "agent");
    }

    #[test]
    fn direct_values_win_and_empty_means_unset() {
        let c = resolve(
            &[
                ("POSTGRES_USER", "agent"),
                ("POSTGRES_DB", "hive_agent"),
                ("POSTGRES_PASSWORD", "pw"),
                ("POSTGRES_DB_FILE", ""),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c,
            Credentials {
                user: "agent".into(),
                password: Some("pw".into()),
                db: "hive_agent".into()
            }
        );
        assert_eq!(
            resolve(&[("POSTGRES_PASSWORD", "")], &[]).unwrap().password,
            None
        );
    }

    #[test]
    fn file_values_lose_only_their_trailing_newlines() {
        let c = resolve(
            &[
                ("POSTGRES_PASSWORD_FILE", "/run/secrets/pw"),
                ("POSTGRES_USER_FILE", "/u"),
            ],
            &[("/run/secrets/pw", " s3cret \n\n"), ("/u", "hive\r\n")],
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some(" s3cret "));
        assert_eq!(c.user, "hive");
    }

    #[test]
    fn missing_file_names_the_variable_and_the_path() {
        let err = resolve(&[("POSTGRES_PASSWORD_FILE", "/run/secrets/nope")], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to read POSTGRES_PASSWORD_FILE from /run/secrets/nope"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn empty_file_is_an_error() {
        let err = resolve(&[("POSTGRES_PASSWORD_FILE", "/pw")], &[("/pw", "\n")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to read POSTGRES_PASSWORD_FILE from /pw: the file is empty"
        );
    }

    #[test]
    fn both_forms_at_once_is_an_error() {
        let err = resolve(
            &[("POSTGRES_DB", "a"), ("POSTGRES_DB_FILE", "/db")],
            &[("/db", "b")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to resolve POSTGRES_DB: both POSTGRES_DB and POSTGRES_DB_FILE are set, set only one"
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = resolve(&[("POSTGRES_PASSWORD", "hunter2")], &[]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
