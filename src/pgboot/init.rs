//! `hivesup postgres init`: everything that must happen before the postgres daemon
//! starts. Runs as root (to create and chown the directories) or as the postgres account.
//! Never starts the server and never talks to it.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::{Common, Credentials, Error, Marker, process::Account, read_marker, write_marker};

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub common: Common,
    /// Extra initdb arguments, split on whitespace like the official image does
    #[arg(long, env = "POSTGRES_INITDB_ARGS", default_value = "")]
    pub initdb_args: String,
}

pub fn run(args: &InitArgs) -> Result<(), Error> {
    let c = &args.common;
    // Resolve (and so validate) the environment on every start, not only the first: a
    // broken POSTGRES_PASSWORD_FILE should stop the container every time.
    let creds = Credentials::from_env()?;
    let account = Account::resolve(&c.user)?;
    let server = server_major(&c.bindir)?;

    // Look before touching anything: a data directory that is refused stays exactly as it
    // was (no chown, no chmod), and one that needs initdb needs the password first.
    let state = if c.pgdata.exists() {
        Some(data_dir_state(&c.pgdata)?)
    } else {
        None
    };
    match &state {
        Some(DataDir::Foreign) => {
            return Err(Error::NotADataDir {
                pgdata: c.pgdata.clone(),
            });
        }
        Some(DataDir::Initialised { version }) => {
            if *version != server {
                return Err(Error::VersionMismatch {
                    pgdata: c.pgdata.clone(),
                    data: version.clone(),
                    server,
                });
            }
            if read_marker(&c.pgdata)? == Some(Marker::RunningScripts) {
                return Err(Error::HalfInitialised {
                    pgdata: c.pgdata.clone(),
                    marker: c.pgdata.join(super::MARKER),
                });
            }
            check_owner(&c.pgdata, &account)?;
        }
        // Refuse before initdb, as the official image does: provisioning could not
        // create the role, and a first start must not half-happen.
        Some(DataDir::Empty) | None if creds.password.is_none() => {
            return Err(Error::MissingSecret {
                var: "POSTGRES_PASSWORD",
            });
        }
        Some(DataDir::Empty) | None => {}
    }

    ensure_dir(&c.pgdata, 0o700, &account)?;
    // setgid so sockets and lock files keep the group; group-readable for local clients.
    ensure_dir(&c.socket_dir, 0o2775, &account)?;

    if matches!(state, Some(DataDir::Initialised { .. })) {
        tracing::info!(pgdata = %c.pgdata.display(), version = %server, "data directory exists, skipping initdb");
        return Ok(());
    }
    initdb(args, &creds, &account)?;
    allow_root_as_superuser(&c.pgdata, &account.name)?;
    write_marker(&c.pgdata, Marker::Pending, &account)?;
    tracing::info!(pgdata = %c.pgdata.display(), version = %server, "initialised a new data directory");
    Ok(())
}

/// An initialised data directory must already belong to the account: postgres refuses
/// one it does not own, and a chown of the top directory alone (what `ensure_dir` does
/// for a fresh root-owned volume) would leave every file inside unreadable to it. Its
/// owner is the user's to change, not ours.
fn check_owner(pgdata: &Path, account: &Account) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(pgdata).map_err(|source| Error::Read {
        path: pgdata.to_owned(),
        source,
    })?;
    if meta.uid() == account.uid.as_raw() {
        return Ok(());
    }
    Err(Error::WrongOwner {
        pgdata: pgdata.to_owned(),
        owner: meta.uid(),
        user: account.name.clone(),
        uid: account.uid.as_raw(),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum DataDir {
    Empty,
    Initialised { version: String },
    Foreign,
}

fn data_dir_state(pgdata: &Path) -> Result<DataDir, Error> {
    let version_file = pgdata.join("PG_VERSION");
    match fs::read_to_string(&version_file) {
        Ok(v) => {
            return Ok(DataDir::Initialised {
                version: v.trim().to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Read {
                path: version_file,
                source,
            });
        }
    }
    let mut entries = fs::read_dir(pgdata).map_err(|source| Error::Read {
        path: pgdata.to_owned(),
        source,
    })?;
    Ok(if entries.next().is_none() {
        DataDir::Empty
    } else {
        DataDir::Foreign
    })
}

/// Creates `dir` if needed and gives it to `account` with `mode`. An existing directory
/// (a fresh Docker volume is root-owned) is chowned too, as the official image does.
fn ensure_dir(dir: &Path, mode: u32, account: &Account) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    account.chown(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|source| Error::SetMode {
        path: dir.to_owned(),
        source,
    })
}

/// The major version of the server binary: `postgres (PostgreSQL) 17.6 (Debian ...)`.
fn server_major(bindir: &Path) -> Result<String, Error> {
    let program = bindir.join("postgres");
    let out = super::process::output(std::process::Command::new(&program).arg("--version"))?;
    parse_major(&out).ok_or(Error::UnknownServerVersion {
        program,
        output: out.trim().to_owned(),
    })
}

/// `17.6` -> `17`, `18beta1` -> `18`, `9.6.24` -> `9.6`: the same spelling PG_VERSION uses.
fn parse_major(version_output: &str) -> Option<String> {
    let v = version_output
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    };
    let first = digits(v);
    let major: u32 = first.parse().ok()?;
    if major >= 10 {
        return Some(first);
    }
    let minor = digits(v.split('.').nth(1)?);
    (!minor.is_empty()).then(|| format!("{first}.{minor}"))
}

/// Arguments for initdb, without the password file. Local connections use peer auth (the
/// OS account is the identity), TCP uses scram-sha-256, and POSTGRES_INITDB_ARGS come
/// last so the user can override any of them.
fn initdb_args(pgdata: &Path, superuser: &str, extra: &str) -> Vec<String> {
    let mut a = vec![
        "-D".to_owned(),
        pgdata.display().to_string(),
        format!("--username={superuser}"),
        "--auth-local=peer".to_owned(),
        "--auth-host=scram-sha-256".to_owned(),
        "--encoding=UTF8".to_owned(),
        "--locale=C.UTF-8".to_owned(),
    ];
    a.extend(extra.split_whitespace().map(str::to_owned));
    a
}

fn initdb(args: &InitArgs, creds: &Credentials, account: &Account) -> Result<(), Error> {
    let c = &args.common;
    let mut cmd = account.command(c.bindir.join("initdb"));
    cmd.args(initdb_args(&c.pgdata, &account.name, &args.initdb_args));
    // The superuser gets a password only when it is also POSTGRES_USER (the official
    // image's default, POSTGRES_USER=postgres). Otherwise it has none and can log in only
    // through the unix socket as its own OS account: the application's password must not
    // also be the superuser's.
    let _pwfile = match (&creds.password, creds.user == account.name) {
        (Some(pw), true) => {
            let f = PwFile::create(pw, account, &c.socket_dir)?;
            cmd.arg(format!("--pwfile={}", f.path.display()));
            Some(f)
        }
        _ => None,
    };
    tracing::info!(pgdata = %c.pgdata.display(), superuser = %account.name, "running initdb");
    super::process::run(&mut cmd).map_err(|e| match (e, free_bytes(&c.pgdata)) {
        // initdb prints the ENOSPC itself, among many lines, and then empties PGDATA: say
        // it once more where the error line is.
        (Error::CommandFailed { program, status }, Some(free)) if free < INITDB_NEEDS => {
            Error::NoSpace {
                program,
                status,
                pgdata: c.pgdata.clone(),
                free_mib: free as f64 / (1 << 20) as f64,
            }
        }
        (e, _) => e,
    })
}

/// About what initdb writes for a new cluster (PostgreSQL 15-17: ~23 MiB of catalog plus
/// one 16 MiB WAL segment), with some room.
const INITDB_NEEDS: u64 = 48 << 20;

/// Bytes available to unprivileged users on the file system of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The superuser's password for `initdb --pwfile`: a file only the postgres account can
/// read, removed when dropped, so the password is never on a command line. It lives in
/// the socket directory, which `run` has just made the account's own: that needs no
/// writable /tmp on a read-only root filesystem (where /run is a tmpfs).
struct PwFile {
    path: PathBuf,
}

impl PwFile {
    fn create(password: &str, account: &Account, dir: &Path) -> Result<PwFile, Error> {
        let path = dir.join(format!("hivesup-pwfile.{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        let pw = PwFile { path };
        account.chown(&pw.path)?;
        writeln!(f, "{password}").map_err(|source| Error::Write {
            path: pw.path.clone(),
            source,
        })?;
        Ok(pw)
    }
}

impl Drop for PwFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// hivesup's readiness probe and `provision` connect through the unix socket as the
/// superuser while running as root. Peer auth would refuse root, so map root (and the
/// account itself) to the superuser for that one role. Root in the container can read
/// PGDATA anyway, so this grants nothing new.
fn allow_root_as_superuser(pgdata: &Path, superuser: &str) -> Result<(), Error> {
    let hba = pgdata.join("pg_hba.conf");
    let old = fs::read_to_string(&hba).map_err(|source| Error::Read {
        path: hba.clone(),
        source,
    })?;
    let new = format!(
        "# hivesup: root (the supervisor's probes) and {superuser} may connect locally as {superuser}\n\
         local   all             {superuser}                                peer map=hivesup\n\n{old}"
    );
    // Write in place: the file keeps its owner and mode.
    fs::write(&hba, new).map_err(|source| Error::Write {
        path: hba.clone(),
        source,
    })?;

    let ident = pgdata.join("pg_ident.conf");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&ident)
        .map_err(|source| Error::Write {
            path: ident.clone(),
            source,
        })?;
    writeln!(f, "\n# hivesup\nhivesup         root                    {superuser}\nhivesup         {superuser:<23} {superuser}")
        .map_err(|source| Error::Write { path: ident.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_are_spelled_like_pg_version() {
        let cases = [
            (
                "postgres (PostgreSQL) 17.6 (Debian 17.6-1.pgdg120+1)\n",
                Some("17"),
            ),
            (
                "postgres (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)",
                Some("15"),
            ),
            ("postgres (PostgreSQL) 18beta1", Some("18")),
            ("postgres (PostgreSQL) 9.6.24", Some("9.6")),
            ("postgres (PostgreSQL) 10.23", Some("10")),
            ("something else", None),
            ("postgres (PostgreSQL) ", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_major(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn user_initdb_args_come_last_so_they_win() {
        let a = initdb_args(
            Path::new("/data"),
            "postgres",
            "  --auth-host=md5   --data-checksums ",
        );
        assert_eq!(&a[..3], ["-D", "/data", "--username=postgres"]);
        assert_eq!(&a[a.len() - 2..], ["--auth-host=md5", "--data-checksums"]);
        assert!(a.contains(&"--auth-host=scram-sha-256".to_owned()));
        assert!(
            !a.iter().any(|x| x.starts_with("--pwfile")),
            "the password file is added only by initdb()"
        );
    }

    #[test]
    fn data_dir_states() {
        let dir = std::env::temp_dir().join(format!("pgboot-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(data_dir_state(&dir).unwrap(), DataDir::Empty);
        fs::write(dir.join("lost+found"), "").unwrap();
        assert_eq!(data_dir_state(&dir).unwrap(), DataDir::Foreign);
        fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(
            data_dir_state(&dir).unwrap(),
            DataDir::Initialised {
                version: "15".into()
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_mismatch_is_one_line_naming_both_versions() {
        let e = Error::VersionMismatch {
            pgdata: "/var/lib/postgresql/data".into(),
            data: "15".into(),
            server: "17".into(),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'));
        assert!(
            s.contains("PostgreSQL 17") && s.contains("PostgreSQL 15 data directory"),
            "{s}"
        );
        // The documented upgrade commands (README, "Data").
        assert!(
            s.contains("serve it with PostgreSQL 15")
                && s.contains("make agent-backup FROM=")
                && s.contains("make agent-restore FILE="),
            "{s}"
        );
        let newer = Error::VersionMismatch {
            pgdata: "/var/lib/postgresql/data".into(),
            data: "18".into(),
            server: "17".into(),
        }
        .to_string();
        assert!(
            newer.contains("newer than this server") && !newer.contains("upgrade it"),
            "{newer}"
        );
    }
}
