//! `hivesup postgres provision`: runs once postgres is ready. Creates the application
//! role (LOGIN, SCRAM password), its database and the `vector` extension there; on the
//! first start only, runs the initdb.d scripts and then clears the marker. Every step
//! checks before it changes, so a second run changes nothing.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio_postgres::{Client, NoTls};

use super::{
    Common, Credentials, Error, Marker, PgError,
    process::Account,
    read_marker,
    sql::{quote_ident, quote_literal, scram_verifier, verifier_matches},
    write_marker,
};

#[derive(clap::Args, Debug)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub common: Common,
    /// The server's port (names the socket file .s.PGSQL.PORT)
    #[arg(long, env = "PGPORT", default_value_t = 5432)]
    pub port: u16,
    /// Scripts (*.sql, *.sh) run once, in name order, on the first start
    #[arg(long, default_value = "/docker-entrypoint-initdb.d")]
    pub initdb_dir: PathBuf,
    /// How long to keep retrying the first connection while the server comes up
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

pub async fn run(args: &ProvisionArgs) -> Result<(), Error> {
    let c = &args.common;
    let creds = Credentials::from_env()?;
    let account = Account::resolve(&c.user)?;
    let marker = read_marker(&c.pgdata)?;
    if marker == Some(Marker::RunningScripts) {
        return Err(Error::HalfInitialised {
            pgdata: c.pgdata.clone(),
            marker: c.pgdata.join(super::MARKER),
        });
    }

    let admin = connect(args, &account.name, "postgres", args.connect_timeout).await?;
    admin
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .map_err(|e| query_err("configure the provisioning session", e))?;
    ensure_role(&admin, &creds, &account.name).await?;
    ensure_database(&admin, &creds).await?;
    drop(admin);

    let db = connect(args, &account.name, &creds.db, Duration::ZERO).await?;
    ensure_extension(&db, &creds.db, "vector").await?;
    drop(db);

    if marker == Some(Marker::Pending) {
        // Flip the marker first: if a script fails or we are killed midway, the next
        // start sees `running-scripts` and refuses, instead of looking fine.
        write_marker(&c.pgdata, Marker::RunningScripts, &account)?;
        run_scripts(args, &creds, &account).await?;
        let path = c.pgdata.join(super::MARKER);
        fs::remove_file(&path).map_err(|source| Error::Write { path, source })?;
        tracing::info!(pgdata = %c.pgdata.display(), "first start complete");
    }
    tracing::info!(role = %creds.user, database = %creds.db, "provisioned");
    Ok(())
}

fn query_err(what: impl Into<String>, e: tokio_postgres::Error) -> Error {
    Error::Query {
        what: what.into(),
        source: PgError(e),
    }
}

/// Connects over the unix socket (peer auth: no password involved). Retries until
/// `patience` has passed, so `provision` also works when started alongside the server.
async fn connect(
    args: &ProvisionArgs,
    user: &str,
    dbname: &str,
    patience: Duration,
) -> Result<Client, Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&args.common.socket_dir)
        .port(args.port)
        .user(user)
        .dbname(dbname)
        .application_name("hivesup-provision")
        .connect_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + patience;
    loop {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %PgError(e), "connection to postgres ended");
                    }
                });
                return Ok(client);
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %PgError(e), "postgres not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(Error::Connect {
                    socket_dir: args.common.socket_dir.clone(),
                    user: user.to_owned(),
                    source: PgError(e),
                });
            }
        }
    }
}

async fn ensure_role(admin: &Client, creds: &Credentials, superuser: &str) -> Result<(), Error> {
    let role = quote_ident(&creds.user);
    let row = admin
        .query_opt(
            "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1",
            &[&creds.user],
        )
        .await
        .map_err(|e| query_err(format!("look up role {}", creds.user), e))?;
    match row {
        None => {
            let Some(password) = &creds.password else {
                return Err(Error::MissingSecret {
                    var: "POSTGRES_PASSWORD",
                });
            };
            let sql = format!(
                "CREATE ROLE {role} LOGIN PASSWORD {}",
                quote_literal(&scram_verifier(password))
            );
            admin
                .batch_execute(&sql)
                .await
                .map_err(|e| query_err(format!("create role {}", creds.user), e))?;
            tracing::info!(role = %creds.user, "created role");
        }
        Some(row) => {
            let can_login: bool = row.get(0);
            let stored: Option<String> = row.get(1);
            if !can_login {
                admin
                    .batch_execute(&format!("ALTER ROLE {role} LOGIN"))
                    .await
                    .map_err(|e| query_err(format!("alter role {}", creds.user), e))?;
                tracing::info!(role = %creds.user, "allowed role to log in");
            }
            match &creds.password {
                Some(pw) if !stored.as_deref().is_some_and(|s| verifier_matches(s, pw)) => {
                    let sql = format!(
                        "ALTER ROLE {role} PASSWORD {}",
                        quote_literal(&scram_verifier(pw))
                    );
                    admin.batch_execute(&sql).await.map_err(|e| {
                        query_err(format!("set the password of role {}", creds.user), e)
                    })?;
                    tracing::info!(role = %creds.user, "set role password from POSTGRES_PASSWORD");
                }
                // The superuser may legitimately have no password: peer auth only.
                None if creds.user != superuser && stored.is_none() => {
                    return Err(Error::MissingSecret {
                        var: "POSTGRES_PASSWORD",
                    });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

async fn ensure_database(admin: &Client, creds: &Credentials) -> Result<(), Error> {
    let owner: Option<String> = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&creds.db],
        )
        .await
        .map_err(|e| query_err(format!("look up database {}", creds.db), e))?
        .map(|r| r.get(0));
    match owner {
        None => {
            let sql = format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&creds.db),
                quote_ident(&creds.user)
            );
            admin
                .batch_execute(&sql)
                .await
                .map_err(|e| query_err(format!("create database {}", creds.db), e))?;
            tracing::info!(database = %creds.db, owner = %creds.user, "created database");
        }
        Some(owner) if owner != creds.user => {
            // An existing database (e.g. POSTGRES_DB=postgres) keeps its owner: taking it
            // over silently could lock someone else out.
            tracing::warn!(database = %creds.db, owner = %owner, role = %creds.user, "database exists with another owner, leaving it");
        }
        Some(_) => {}
    }
    Ok(())
}

async fn ensure_extension(db: &Client, dbname: &str, extension: &str) -> Result<(), Error> {
    let exists = db
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = $1",
            &[&extension],
        )
        .await
        .map_err(|e| query_err(format!("look up extension {extension}"), e))?
        .is_some();
    if !exists {
        db.batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS {}",
            quote_ident(extension)
        ))
        .await
        .map_err(|e| query_err(format!("create extension {extension} in {dbname}"), e))?;
        tracing::info!(database = %dbname, extension, "created extension");
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Script {
    Sql(PathBuf),
    Shell(PathBuf),
    Ignored(PathBuf),
}

/// The scripts of `dir` in name order (byte order of the file name). A missing
/// directory has no scripts.
fn list_scripts(dir: &Path) -> Result<Vec<Script>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_owned(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(classify)
        .collect())
}

fn classify(path: PathBuf) -> Script {
    match path.extension().and_then(|e| e.to_str()) {
        Some("sql") => Script::Sql(path),
        Some("sh") => Script::Shell(path),
        _ => Script::Ignored(path),
    }
}

/// The scripts' session user is the superuser (peer auth, no password), but they act as
/// the application role, as in the official image where POSTGRES_USER runs them: what they
/// create belongs to the application. A script that needs superuser rights (an untrusted
/// extension, CREATE ROLE) starts with `RESET ROLE`.
async fn run_scripts(
    args: &ProvisionArgs,
    creds: &Credentials,
    account: &Account,
) -> Result<(), Error> {
    for script in list_scripts(&args.initdb_dir)? {
        match script {
            Script::Sql(path) => {
                tracing::info!(script = %path.display(), database = %creds.db, "running");
                let text = fs::read_to_string(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                // A fresh session per script, so one script's SETs do not leak into the next.
                let client = connect(args, &account.name, &creds.db, Duration::ZERO).await?;
                client
                    .batch_execute(&format!("SET ROLE {}", quote_ident(&creds.user)))
                    .await
                    .map_err(|e| Error::SqlScript {
                        path: path.clone(),
                        source: PgError(e),
                    })?;
                client
                    .batch_execute(&text)
                    .await
                    .map_err(|e| Error::SqlScript {
                        path: path.clone(),
                        source: PgError(e),
                    })?;
            }
            Script::Shell(path) => {
                tracing::info!(script = %path.display(), "running");
                let executable = fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                let mut cmd = if executable {
                    account.command(&path)
                } else {
                    let mut cmd = account.command("/bin/sh");
                    cmd.arg(&path);
                    cmd
                };
                cmd.current_dir(&args.initdb_dir)
                    .env("PGHOST", &args.common.socket_dir)
                    .env("PGPORT", args.port.to_string())
                    .env("PGUSER", &account.name)
                    .env("PGDATABASE", &creds.db)
                    .env("PGDATA", &args.common.pgdata)
                    .env("POSTGRES_USER", &creds.user)
                    .env("POSTGRES_DB", &creds.db)
                    .env(
                        "PGOPTIONS",
                        format!("-c role={}", pgoptions_escape(&creds.user)),
                    );
                // A blocking wait is fine: nothing else runs on this runtime meanwhile.
                super::process::run(&mut cmd)?;
            }
            Script::Ignored(path) => {
                tracing::warn!(script = %path.display(), "ignoring: not *.sql or *.sh")
            }
        }
    }
    Ok(())
}

/// A value inside PGOPTIONS: spaces and backslashes are escaped with a backslash (libpq's
/// `-c name=value` splitting, see "PGOPTIONS" in the libpq docs).
fn pgoptions_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn pgoptions_values_escape_spaces_and_backslashes() {
        assert_eq!(super::pgoptions_escape("agent"), "agent");
        assert_eq!(super::pgoptions_escape(r"my app\x"), r"my\ app\\x");
    }

    use super::*;

    #[test]
    fn scripts_run_in_name_order_by_kind() {
        let dir = std::env::temp_dir().join(format!("pgboot-scripts-{}", std::process::id()));
        fs::create_dir_all(dir.join("20-subdir.sql")).unwrap();
        for f in [
            "30-last.sh",
            "10-first.sql",
            "README.md",
            "02-early.sh",
            "11-second.sql",
        ] {
            fs::write(dir.join(f), "").unwrap();
        }
        let got = list_scripts(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got,
            vec![
                Script::Shell(dir.join("02-early.sh")),
                Script::Sql(dir.join("10-first.sql")),
                Script::Sql(dir.join("11-second.sql")),
                Script::Shell(dir.join("30-last.sh")),
                Script::Ignored(dir.join("README.md")),
            ]
        );
    }

    #[test]
    fn missing_script_dir_means_no_scripts() {
        assert_eq!(
            list_scripts(Path::new("/nonexistent/initdb.d")).unwrap(),
            vec![]
        );
    }
}
