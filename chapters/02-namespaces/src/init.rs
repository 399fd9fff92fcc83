//! `--init`: a minimal init to run as PID 1, as `docker run --init` does with tini.
//!
//! The first process of a PID namespace has two duties no other process has; see
//! pid_namespaces(7). The kernel delivers it only the signals it has installed a handler
//! for, so a program that never expected to be PID 1 ignores SIGTERM and Ctrl-C. And every
//! process whose parent ends is re-parented to it: unless it waits for them, they stay as
//! zombies. This init runs the command as its child, passes signals on, and reaps them all.

use anyhow::{Context, Result};
use ch01_chroot::process::fork_child;
use nix::errno::Errno;

use crate::signals::forward_signals_until_exit;

// ANCHOR: run_init
/// Runs `command` (a function that execs it) as the child of this process, forwarding
/// signals and reaping zombies until it ends; returns its exit status.
pub fn run_init(command: impl FnOnce() -> u8) -> Result<u8> {
    close_inherited_fds()?;
    let child = fork_child(command)?;
    forward_signals_until_exit(child)
}
// ANCHOR_END: run_init

// ANCHOR: close_inherited_fds
/// Closes every file descriptor above stderr. The init never execs, so close-on-exec does
/// not help it: whatever it kept open would stay readable, by any process of the container,
/// as `/proc/1/fd/N`.
fn close_inherited_fds() -> Result<()> {
    // SAFETY: the init owns nothing above stderr that it uses again: it only forks the
    // command and waits, and no owner of a closed descriptor is ever dropped in it.
    let result = unsafe { libc::close_range(3, u32::MAX, 0) };
    Errno::result(result).context("close the descriptors the init inherited")?;
    Ok(())
}
// ANCHOR_END: close_inherited_fds
