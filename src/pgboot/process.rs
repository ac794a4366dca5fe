//! The OS account postgres runs as, and running a child (initdb, an initdb.d script) as
//! that account. Started as root, we switch uid/gid in the child (std drops the
//! supplementary groups too); started as that account already, nothing changes.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use nix::unistd::{Gid, Uid, User};

use super::Error;

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
    /// Whether we are root and so must switch to this account for children and chown
    /// what we create.
    pub switch: bool,
}

impl Account {
    /// As root: the named account. Otherwise we must already be that account
    /// (`docker run --user postgres`): a non-root process cannot become anyone else, and
    /// an initdb run as some other user would name the superuser after that user.
    pub fn resolve(name: &str) -> Result<Account, Error> {
        let uid = Uid::effective();
        let root = uid.is_root();
        let lookup = if root {
            User::from_name(name)
        } else {
            User::from_uid(uid)
        };
        let user = lookup
            .map_err(|source| Error::LookupUser {
                user: name.to_owned(),
                source,
            })?
            .filter(|u| root || u.name == name);
        let user = match user {
            Some(u) => u,
            None if root => {
                return Err(Error::NoSuchUser {
                    user: name.to_owned(),
                });
            }
            None => {
                return Err(Error::NotThatUser {
                    user: name.to_owned(),
                    uid: uid.as_raw(),
                });
            }
        };
        Ok(Account {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            switch: root,
        })
    }

    /// Give `path` to this account (a no-op unless we are root).
    pub fn chown(&self, path: &Path) -> Result<(), Error> {
        if !self.switch {
            return Ok(());
        }
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| Error::Chown {
            path: path.to_owned(),
            source,
        })
    }

    /// A command that will run as this account, from `/` (the account may not be able to
    /// enter our working directory, and initdb warns about that).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir("/");
        if self.switch {
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
            cmd.env("HOME", &self.home)
                .env("USER", &self.name)
                .env("LOGNAME", &self.name);
        }
        cmd
    }
}

/// Runs `cmd` to completion with inherited stdio, so its output reaches hivesup's log
/// under this program's name. Fails unless it exits 0.
// This is a oneshot's own process, not PID 1: its children are its own to wait for, and
// hivesup's reaper only sees this process.
#[allow(clippy::disallowed_methods)]
pub fn run(cmd: &mut Command) -> Result<(), Error> {
    let program = PathBuf::from(cmd.get_program());
    let status = cmd.status().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed { program, status })
    }
}

/// Captured stdout of a short command (`postgres --version`).
#[allow(clippy::disallowed_methods)] // not PID 1: see `run`
pub fn output(cmd: &mut Command) -> Result<String, Error> {
    let program = PathBuf::from(cmd.get_program());
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            program,
            status: out.status,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
