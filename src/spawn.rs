//! Program config -> child process in its own session.
//!
//! Everything that may allocate or read the account database (argv, environment, the
//! uid/gid/groups of `user`) is prepared before fork: between fork and exec only
//! async-signal-safe calls are allowed (setsid, sigprocmask, signal, setgroups, setgid,
//! setuid), as in Horust's signal_safe.rs and tini's restore_signals. The fork itself goes
//! through [`Reaper::spawn`], the one place that registers pids.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid, User, getgrouplist};

use crate::config::UserSpec;
use crate::reaper::{Reaper, Spawned};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("failed to find user \"{0}\" in the account database")]
    UnknownUser(String),
    #[error("failed to look up user {user}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "failed to switch to user {user}: hivesup runs as uid {current}, not root, so it can only run programs as itself (remove `user`, set supervisor.user_switch = \"if-root\", or run hivesup as root)"
    )]
    NotRoot { user: String, current: u32 },
    #[error("failed to enter directory {}", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to start {program}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The code a shell would give: 127 not found, 126 found but not executable, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::Exec { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) => 127,
                Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => 126,
                _ => 1,
            },
            _ => 1,
        }
    }
}

/// Credentials to switch to in the child, resolved before fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub name: Option<String>,
    pub home: Option<PathBuf>,
}

/// Resolves `user` to ids. Must run before fork: getpwnam is not async-signal-safe.
pub fn resolve_user(spec: &UserSpec) -> Result<Credentials, SpawnError> {
    let lookup = |r: nix::Result<Option<User>>, shown: String| {
        r.map_err(|source| SpawnError::UserLookup {
            user: shown,
            source,
        })
    };
    let user = match spec {
        UserSpec::Name(name) => match lookup(User::from_name(name), name.clone())? {
            Some(u) => u,
            None => return Err(SpawnError::UnknownUser(name.clone())),
        },
        UserSpec::Uid(uid) => match lookup(User::from_uid(Uid::from_raw(*uid)), uid.to_string())? {
            Some(u) => u,
            // A uid with no passwd entry runs with gid = uid and no supplementary groups.
            None => {
                return Ok(Credentials {
                    uid: *uid,
                    gid: *uid,
                    groups: vec![*uid],
                    name: None,
                    home: None,
                });
            }
        },
        UserSpec::UidGid(uid, gid) => {
            return Ok(Credentials {
                uid: *uid,
                gid: *gid,
                groups: vec![*gid],
                name: None,
                home: None,
            });
        }
    };
    let cname =
        CString::new(user.name.clone()).map_err(|_| SpawnError::UnknownUser(user.name.clone()))?;
    let groups = getgrouplist(&cname, user.gid)
        .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()]);
    Ok(Credentials {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        name: Some(user.name),
        home: Some(user.dir),
    })
}

/// The credentials to switch to for `user`: `None` when hivesup already runs as that user
/// (a non-root hivesup runs programs as itself), an error when it would need root.
fn credentials_to_switch(u: &UserSpec) -> Result<Option<Credentials>, SpawnError> {
    let c = resolve_user(u)?;
    let current = nix::unistd::geteuid().as_raw();
    if current == 0 {
        Ok(Some(c))
    } else if c.uid == current {
        Ok(None)
    } else {
        Err(SpawnError::NotRoot {
            user: user_label(u),
            current,
        })
    }
}

/// `supervisor.user_switch = "if-root"` with hivesup not root (`docker run --user`): each
/// program whose `user` hivesup cannot switch to runs as hivesup itself instead, with a
/// warning. Clears those `user`s, so preflight and spawn see nothing to switch. A user
/// that does not exist is kept, so preflight still reports it; as root nothing changes.
/// Called on every load of the config: at start and on reload.
pub fn apply_user_switch(config: &mut crate::config::Config) {
    if config.supervisor.user_switch != crate::config::UserSwitch::IfRoot {
        return;
    }
    let uid = nix::unistd::geteuid().as_raw();
    for p in &mut config.programs {
        if let Some(u) = &p.user {
            if let Err(SpawnError::NotRoot { user, .. }) = credentials_to_switch(u) {
                tracing::warn!(program = %p.name, user = %user, uid, "hivesup is not root: running the program as itself (supervisor.user_switch = \"if-root\")");
                p.user = None;
            }
        }
    }
}

/// What to run and how; everything the child needs, owned, before fork. `Debug` shows the
/// names of `env` but not its values, which may be secrets.
#[derive(Clone, Default)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    /// Added to (and overriding) hivesup's own environment.
    pub env: Vec<(String, String)>,
    pub directory: Option<PathBuf>,
    pub user: Option<UserSpec>,
    /// Pipe stdout/stderr back to hivesup (supervise mode) instead of inheriting them.
    pub capture_output: bool,
    /// Send stdout/stderr to /dev/null (probes): takes precedence over `capture_output`.
    pub silence: bool,
    /// Keep hivesup's stdin (init mode); otherwise /dev/null.
    pub inherit_stdin: bool,
    /// Make the terminal on stdin the child's controlling terminal (init mode under
    /// `docker run -it`), as dumb-init does after setsid.
    pub take_tty: bool,
}

impl std::fmt::Debug for SpawnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SpawnSpec")
            .field("argv", &self.argv)
            .field("env (names only)", &env)
            .field("directory", &self.directory)
            .field("user", &self.user)
            .field("capture_output", &self.capture_output)
            .field("silence", &self.silence)
            .field("inherit_stdin", &self.inherit_stdin)
            .field("take_tty", &self.take_tty)
            .finish()
    }
}

/// Spawns `spec` through the reaper: own session and process group, clean signal mask,
/// dropped privileges.
pub fn spawn(reaper: &Reaper, spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let program = spec.argv.first().cloned().unwrap_or_default();
    let creds = match &spec.user {
        None => None,
        Some(u) => credentials_to_switch(u)?,
    };

    // chdir fails in the child with the same errno as a missing program would; check
    // first so the message names the directory.
    if let Some(dir) = &spec.directory {
        let usable = std::fs::metadata(dir).and_then(|m| {
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        });
        if let Err(source) = usable {
            return Err(SpawnError::Directory {
                dir: dir.clone(),
                source,
            });
        }
    }

    let mut cmd = match resolve_in_parent(&program, &spec.env, creds.is_some()) {
        Some(path) => {
            let mut cmd = Command::new(path);
            cmd.arg0(&program);
            cmd
        }
        None => Command::new(&program),
    };
    cmd.args(&spec.argv[1..]);
    if let Some(c) = &creds {
        // Like su(1): the program sees its own identity unless the config says otherwise.
        if let Some(name) = &c.name {
            cmd.env("USER", name).env("LOGNAME", name);
        }
        if let Some(home) = &c.home {
            cmd.env("HOME", home);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.directory {
        cmd.current_dir(dir);
    }
    if spec.silence {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    } else if spec.capture_output {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    if !spec.inherit_stdin {
        cmd.stdin(Stdio::null());
    }
    let take_tty = spec.take_tty;
    let ids = creds.map(|c| (c.uid, c.gid, c.groups));
    // SAFETY: the closure runs in the child between fork and exec. It only makes
    // async-signal-safe calls (setsid, ioctl, sigemptyset, sigprocmask, signal, setgroups,
    // setgid, setuid) on data prepared before fork, and allocates nothing: errors are
    // built with from_raw_os_error/last_os_error, which do not allocate.
    unsafe {
        cmd.pre_exec(move || {
            // Own session => own process group: stop signals go to the whole group.
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if take_tty {
                // Best effort: fails harmlessly when stdin is not a terminal.
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
            // std inherits the parent's signal mask; a program must start with none blocked.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            // Rust ignores SIGPIPE in its own processes; programs expect the default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    reaper
        .spawn(&mut cmd)
        .map_err(|source| SpawnError::Exec { program, source })
}

/// Where execvp would find `program`, found now, before fork, so that the child execs
/// once instead of failing through every PATH entry before the right one (eight failed
/// execve calls for `sleep` with a typical PATH). argv[0] stays as written.
///
/// `None` leaves the search to execvp in the child, which is always right: for a path
/// with a '/' (no search), for a child that switches user (whether a file is executable
/// is for that user to find out), for a PATH with relative or empty entries (those name
/// the child's working directory), and when nothing executable is found (the child's
/// execvp then reports the errno a shell would).
fn resolve_in_parent(
    program: &str,
    env: &[(String, String)],
    switches_user: bool,
) -> Option<PathBuf> {
    if program.contains('/') || program.is_empty() || switches_user {
        return None;
    }
    let path_var = match env.iter().rev().find(|(k, _)| k == "PATH") {
        Some((_, v)) => v.clone(),
        None => std::env::var("PATH").ok()?,
    };
    if path_var.split(':').any(|d| !d.starts_with('/')) {
        return None;
    }
    find_executable(program, &path_var, None).ok()
}

fn user_label(u: &UserSpec) -> String {
    match u {
        UserSpec::Name(n) => format!("\"{n}\""),
        UserSpec::Uid(uid) => format!("uid {uid}"),
        UserSpec::UidGid(uid, gid) => format!("{uid}:{gid}"),
    }
}

/// Checks, before anything starts, what would make a program fail to spawn: an unknown
/// user, a user hivesup cannot switch to, a command that is missing or not executable.
/// Returns one message per problem, each naming the program's config key.
pub fn preflight(p: &crate::config::ProgramConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let key = format!("programs.{}", p.name);
    if let Some(Err(e)) = p.user.as_ref().map(credentials_to_switch) {
        problems.push(format!("{key}.user: {e}"));
    }
    if let Some(dir) = &p.directory {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.push(format!(
                "{key}.directory: \"{}\" is not a directory",
                dir.display()
            )),
            Err(e) => problems.push(format!("{key}.directory: \"{}\": {e}", dir.display())),
        }
    }
    let argv = p.command.argv();
    // A secret that cannot be read now would fail every start: say so before any starts.
    for (k, v) in &p.environment {
        if let crate::config::EnvValue::File(path) = v {
            if let Err(e) = crate::config::env::read_secret(&format!("{key}.environment.{k}"), path)
            {
                problems.push(crate::supervisor::error_chain(&e));
            }
        }
    }
    let path_var = p
        .plain_env("PATH")
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    if let Err(e) = find_executable(&argv[0], &path_var, p.directory.as_deref()) {
        problems.push(format!("{key}.command: {e}"));
    }
    problems
}

/// Finds `program` the way execvp would; the error says what is wrong with it.
pub fn find_executable(
    program: &str,
    path_var: &str,
    dir: Option<&std::path::Path>,
) -> Result<PathBuf, String> {
    use nix::unistd::{AccessFlags, access};
    let check = |candidate: PathBuf| -> Result<PathBuf, String> {
        let meta = std::fs::metadata(&candidate)
            .map_err(|e| format!("\"{}\": {e}", candidate.display()))?;
        if meta.is_dir() {
            return Err(format!("\"{}\" is a directory", candidate.display()));
        }
        // access(2) says yes to root for any file with one x bit; require one for everybody.
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 || access(&candidate, AccessFlags::X_OK).is_err()
        {
            return Err(format!("\"{}\" is not executable", candidate.display()));
        }
        Ok(candidate)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        let p = match dir {
            Some(d) if p.is_relative() => d.join(p),
            _ => p,
        };
        return check(p);
    }
    let mut last = None;
    for d in path_var.split(':').filter(|d| !d.is_empty()) {
        match check(std::path::Path::new(d).join(program)) {
            Ok(p) => return Ok(p),
            Err(e) if e.ends_with("is not executable") || e.ends_with("is a directory") => {
                last = Some(e)
            }
            Err(_) => {}
        }
    }
    Err(last.unwrap_or_else(|| format!("\"{program}\" not found in PATH ({path_var})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_and_numeric_users() {
        let root = resolve_user(&UserSpec::Name("root".into())).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.home.as_deref(), Some(std::path::Path::new("/root")));
        let c = resolve_user(&UserSpec::UidGid(1234, 99)).unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (1234, 99, vec![99]));
        let c = resolve_user(&UserSpec::Uid(4_000_000)).unwrap();
        assert_eq!((c.uid, c.gid), (4_000_000, 4_000_000));
    }

    #[test]
    fn unknown_user_is_a_clear_error() {
        let e = resolve_user(&UserSpec::Name("no-such-user-hivesup".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to find user \"no-such-user-hivesup\" in the account database"
        );
    }

    #[test]
    fn finds_executables_like_execvp() {
        assert_eq!(
            find_executable("sh", "/nonexistent:/bin", None).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let e = find_executable("no-such-prog-hivesup", "/bin", None).unwrap_err();
        assert_eq!(e, "\"no-such-prog-hivesup\" not found in PATH (/bin)");
        let plain = std::env::temp_dir().join(format!("hivesup-plain-{}", std::process::id()));
        std::fs::write(&plain, "x").unwrap();
        let e = find_executable(plain.to_str().unwrap(), "", None).unwrap_err();
        std::fs::remove_file(&plain).unwrap();
        assert!(e.ends_with("is not executable"), "{e}");
        assert!(
            find_executable("/etc", "", None)
                .unwrap_err()
                .ends_with("is a directory")
        );
        assert!(
            find_executable("/nope/x", "", None)
                .unwrap_err()
                .contains("No such file")
        );
    }

    #[test]
    fn debug_never_shows_environment_values() {
        let spec = SpawnSpec {
            argv: vec!["x".into()],
            env: vec![("DB_PASSWORD".into(), "s3cr3t-value".into())],
            ..SpawnSpec::default()
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("DB_PASSWORD"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn resolves_in_the_parent_only_when_execvp_would_agree() {
        let env = |path: &str| vec![("PATH".to_string(), path.to_string())];
        assert_eq!(
            resolve_in_parent("sh", &env("/nonexistent:/bin"), false),
            Some(PathBuf::from("/bin/sh"))
        );
        // Left to execvp in the child: paths, user switches, relative or empty entries,
        // nothing found.
        assert_eq!(resolve_in_parent("/bin/sh", &env("/bin"), false), None);
        assert_eq!(resolve_in_parent("sh", &env("/bin"), true), None);
        assert_eq!(resolve_in_parent("sh", &env("bin:/bin"), false), None);
        assert_eq!(resolve_in_parent("sh", &env(":/bin"), false), None);
        assert_eq!(
            resolve_in_parent("no-such-prog-hivesup", &env("/bin"), false),
            None
        );
    }

    #[test]
    fn exec_errors_map_to_shell_codes() {
        let e = |errno| SpawnError::Exec {
            program: "x".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert_eq!(e(libc::ENOENT).exit_code(), 127);
        assert_eq!(e(libc::EACCES).exit_code(), 126);
        assert_eq!(e(libc::ENOMEM).exit_code(), 1);
    }
}
