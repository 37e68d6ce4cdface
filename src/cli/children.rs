//! `haven serve` child processes for the commands that run a whole cluster on this machine
//! (`haven demo`, `haven bench cluster`): free loopback ports, a working directory removed on
//! drop, and children that never outlive the parent's handles (killed and reaped on drop,
//! and by [`kill_all_registered`] from a signal-handling thread).

use haven::{ClusterId, Error, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pids of the children alive now, for a signal handler that must kill them before exiting.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL every child that was started and not yet reaped (for a signal handler: the
/// `Member` handles' drops will not run when the process exits from another thread).
pub fn kill_all_registered() {
    for pid in live().iter() {
        // SAFETY: sending a signal to a child of ours that has not been reaped (it is removed
        // from the list before it is), so the pid cannot have been reused.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
}

/// A `haven serve` child, killed and reaped on drop.
pub struct Member {
    /// Its member id.
    pub id: usize,
    child: Option<Child>,
}

impl Member {
    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it runs (has not been stopped or killed through this handle).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn reap(&mut self, mut child: Child) {
        let _ = child.wait();
        live().retain(|p| *p != child.id());
    }

    /// SIGKILL (a crash: no graceful hand-over) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.reap(child);
        }
    }

    /// SIGTERM, then SIGKILL if it does not exit within 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending a signal to our own child process, not yet reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    live().retain(|p| *p != child.id());
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            self.reap(child);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A working directory removed on drop (when it is ours to remove).
pub struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    /// A new directory `NAME-PID` under the current directory, so on its filesystem (`/tmp`
    /// is often a tmpfs, where fdatasync costs nothing), removed on drop.
    pub fn create(name: &str) -> Result<WorkDir> {
        let path = std::env::current_dir()
            .map_err(|e| Error::io("reading the working directory", e))?
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(WorkDir { path, remove: true })
    }

    /// An existing directory the caller chose: created if missing, never removed.
    pub fn given(path: &Path) -> Result<WorkDir> {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(WorkDir {
            path: path.to_path_buf(),
            remove: false,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep it after all.
    pub fn keep(&mut self) {
        self.remove = false;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `n` distinct free loopback addresses (see [`haven::net::free_loopback_addrs`]).
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    haven::net::free_loopback_addrs(n).map_err(|e| Error::io("finding free ports", e))
}

/// Start `haven serve` (this same binary) as member `id` (1-based) of `addrs`, data in
/// `dir/n{id}`, its log appended to `dir/n{id}.log`.
pub fn start_member(
    dir: &Path,
    id: usize,
    addrs: &[SocketAddr],
    secret_file: &Path,
    cluster_id: ClusterId,
    extra: &[&str],
) -> Result<Member> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the haven binary", e))?;
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("n{id}.log")))
        .map_err(|e| Error::io("creating a member log", e))?;
    let mut registry = live();
    let child = Command::new(exe)
        .arg("serve")
        .args(["--id", &id.to_string()])
        .args(["--listen", &addrs[id - 1].to_string()])
        .args(["--peers", &peers.join(",")])
        .arg("--data-dir")
        .arg(dir.join(format!("n{id}")))
        .arg("--secret-file")
        .arg(secret_file)
        .args(["--cluster-id", &cluster_id.0.to_string()])
        .args(extra)
        .env("HAVEN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io("starting haven serve", e))?;
    registry.push(child.id());
    Ok(Member {
        id,
        child: Some(child),
    })
}
