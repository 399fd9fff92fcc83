//! Creating the container's process and collecting its exit status.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Exit status when the runtime itself fails, as docker and runc use it.
pub const EXIT_RUNTIME_FAILURE: u8 = 125;

/// The runtime's exit status: the container's, or [`EXIT_RUNTIME_FAILURE`] after saying on
/// stderr, prefixed with the runtime's name, why it failed.
pub fn exit_code_for(binary: &str, result: Result<u8>) -> ExitCode {
    match result {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("{binary}: {err:#}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}

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

// ANCHOR: die_with_runtime
/// Asks the kernel to SIGKILL this process when the runtime that started it ends, however
/// it ends: a container in the foreground never outlives its runtime, even one killed with
/// SIGKILL, which runs no clean-up of its own.
pub fn die_with_runtime() -> Result<()> {
    // See prctl(2), PR_SET_PDEATHSIG: the signal comes when the parent *thread* exits, and
    // it survives execve(2) except of a set-user-ID program.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("ask to die with the runtime")
}
// ANCHOR_END: die_with_runtime

// ANCHOR: wait_for_exit
/// Waits for `pid` to end and returns its exit status the way a shell reports it.
pub fn wait_for_exit(pid: Pid) -> Result<u8> {
    loop {
        let status = waitpid(pid, None).with_context(|| format!("wait for pid {pid}"))?;
        if let Some(code) = exit_status(status) {
            return Ok(code);
        }
    }
}

/// The status a shell reports for a process that ended: the status it exited with, or
/// 128 + N when signal N killed it. `None` while it has not ended (stopped, continued).
pub fn exit_status(status: WaitStatus) -> Option<u8> {
    // EXERCISE 1.2: turn a WaitStatus into a shell's exit status: Exited gives its code, Signaled 128 + the signal number
    match status {
        // WEXITSTATUS is the low 8 bits of what the child passed to exit(2).
        WaitStatus::Exited(_, code) => Some(code as u8),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as u8),
        _ => None,
    }
    // END EXERCISE
}
// ANCHOR_END: wait_for_exit
