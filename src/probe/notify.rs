//! sd_notify readiness: hivesup binds a unix datagram socket per program, passes its path
//! in $NOTIFY_SOCKET, and the program sends `READY=1` when it is ready (Debian's postgres
//! does, so its readiness costs no polling at all). See sd_notify(3).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixDatagram;

pub struct NotifySocket {
    pub path: PathBuf,
    socket: Arc<UnixDatagram>,
}

impl NotifySocket {
    /// Binds the socket at `path` (replacing a stale one), writable only by `owner`.
    pub fn bind(path: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(NotifySocket {
            path: path.to_path_buf(),
            socket: Arc::new(socket),
        })
    }

    /// Throws away messages of a previous run of the program.
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        while self.socket.try_recv(&mut buf).is_ok() {}
    }

    /// Resolves at the first `READY=1`; afterwards keeps reading (and dropping) messages,
    /// so the program never blocks on a full socket buffer.
    pub fn watch(
        &self,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send + 'static + use<> {
        let socket = self.socket.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = socket.recv(&mut buf).await?;
                if is_ready(&buf[..n]) {
                    return Ok(());
                }
            }
        }
    }

    /// Drains messages forever (after readiness), so senders never block.
    pub fn sink(&self) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        let socket = self.socket.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            while socket.recv(&mut buf).await.is_ok() {}
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A notify message is newline-separated `KEY=VALUE` assignments.
pub fn is_ready(msg: &[u8]) -> bool {
    String::from_utf8_lossy(msg)
        .lines()
        .any(|l| l.trim() == "READY=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        assert!(is_ready(b"READY=1"));
        assert!(is_ready(b"STATUS=starting\nREADY=1\n"));
        assert!(!is_ready(b"READY=0"));
        assert!(!is_ready(b"STATUS=READY=1"));
    }
}
