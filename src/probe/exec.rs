//! exec probe: a command exits 0. Spawned and reaped through the reaper, never waited
//! on directly; a probe that times out has its whole process group killed.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::Context;
use crate::spawn::{self, SpawnSpec};

pub async fn check(argv: &[String], ctx: &Context) -> Result<(), String> {
    let spec = SpawnSpec {
        argv: argv.to_vec(),
        silence: true,
        ..ctx.base.clone()
    };
    let child = spawn::spawn(&ctx.reaper, &spec).map_err(|e| crate::supervisor::error_chain(&e))?;
    // If this future is dropped (timeout, program exit), kill the probe's group.
    let guard = KillOnDrop(child.pid);
    let exit = child
        .exit
        .await
        .map_err(|_| "probe status lost".to_string())?;
    std::mem::forget(guard);
    if exit.success() {
        Ok(())
    } else {
        Err(format!("{} {exit}", argv[0]))
    }
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // ESRCH (already gone) is fine.
        let _ = killpg(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}
