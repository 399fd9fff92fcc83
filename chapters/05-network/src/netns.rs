//! Network namespaces as files: /proc/PID/ns/net for a process's, or a bind mount of one
//! under /run/netns (what `ip netns add` makes). See network_namespaces(7) and setns(2).

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::resume_unwind;
use std::path::Path;
use std::thread;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Opens a network namespace file, checking that it is one.
pub fn open_netns(path: &Path) -> Result<OwnedFd> {
    let file = File::open(path)
        .with_context(|| format!("open the network namespace {}", path.display()))?;
    // An open namespace file reads back as `net:[INODE]` through /proc/self/fd.
    let link = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if !link.to_string_lossy().starts_with("net:[") {
        bail!(
            "{} is not a network namespace; use /proc/PID/ns/net or a file under /run/netns",
            path.display()
        );
    }
    Ok(file.into())
}

// ANCHOR: join_netns
/// Moves the calling thread into the network namespace `netns`.
pub fn join_netns(netns: BorrowedFd) -> Result<()> {
    // EXERCISE 5.1: move this thread into the network namespace `netns`
    setns(netns, CloneFlags::CLONE_NEWNET).context("join the network namespace")
    // END EXERCISE
}
// ANCHOR_END: join_netns

// ANCHOR: in_netns
/// Runs `work` in the network namespace `netns`, on a thread of its own, so the runtime's
/// main thread stays in the host's namespace. (A namespace belongs to a thread, not to the
/// whole process: setns(2) moves only the caller.)
pub fn in_netns<T: Send>(netns: &OwnedFd, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let netns = netns.as_fd();
    thread::scope(|scope| {
        let thread = scope.spawn(|| {
            join_netns(netns)?;
            work()
        });
        thread.join().unwrap_or_else(|panic| resume_unwind(panic))
    })
}
// ANCHOR_END: in_netns
