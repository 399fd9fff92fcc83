//! Creating the container's process and collecting its exit status.

use anyhow::{bail, Context, Result};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Exit status when the runtime itself fails, as docker and runc use it.
pub const EXIT_RUNTIME_FAILURE: u8 = 125;

/// Fails with a hint to use sudo unless this process runs as root.
pub fn require_root(binary: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{binary} must run as root to change the root directory; run it with sudo");
    }
    Ok(())
}

/// Runs `child` in a new process, which exits with the status `child` returns, and gives the
/// parent the child's pid.
pub fn fork_child(child: impl FnOnce() -> u8) -> Result<Pid> {
    // SAFETY: the chapter binaries fork before they start any thread, so the child is a
    // complete copy of a single-threaded process and may run any code.
    match unsafe { fork() }.context("fork the container process")? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => std::process::exit(child().into()),
    }
}

// ANCHOR: wait_for_exit
/// Waits for `pid` to end and returns its exit status the way a shell reports it: the
/// status it exited with, or 128 + N when signal N killed it.
pub fn wait_for_exit(pid: Pid) -> Result<u8> {
    // EXERCISE 1.2: wait for `pid` with waitpid(2) and turn its WaitStatus into a shell exit status
    loop {
        match waitpid(pid, None).with_context(|| format!("wait for pid {pid}"))? {
            // WEXITSTATUS is the low 8 bits of what the child passed to exit(2).
            WaitStatus::Exited(_, code) => return Ok(code as u8),
            WaitStatus::Signaled(_, signal, _) => return Ok(128 + signal as u8),
            _ => continue,
        }
    }
    // END EXERCISE
}
// ANCHOR_END: wait_for_exit
