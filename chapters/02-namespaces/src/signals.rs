//! Signals: the runtime and the container's init pass them on to the process they run, and
//! reap every child that ends.
//!
//! Both block the signals they handle and take them one at a time with sigwait(3), instead
//! of installing handlers: then no signal is lost between creating the child and waiting
//! for it, and the code that handles one is ordinary code, not a signal handler.

use anyhow::{Context, Result};
use ch01_chroot::process::exit_status;
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signals a user sends to stop or poke a container; they are passed on to it.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        set.add(signal);
    }
    set
}

/// The signal mask that was in force before [`block_signals`].
#[derive(Debug)]
pub struct SignalMask(SigSet);

/// Blocks the forwarded signals and SIGCHLD, so they wait until [`forward_signals_until_exit`]
/// takes them. Call it before creating the child.
pub fn block_signals() -> Result<SignalMask> {
    let previous = handled_signals()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .context("block the signals to forward")?;
    Ok(SignalMask(previous))
}

impl SignalMask {
    /// Gives the command the mask it would have had: a blocked mask survives execve(2).
    pub fn restore(&self) -> Result<()> {
        self.0.thread_set_mask().context("restore the signal mask")
    }
}

// ANCHOR: forward_signals_until_exit
/// Passes every forwarded signal on to `main` and reaps every child that ends, until `main`
/// itself ends; returns its exit status as a shell reports it.
pub fn forward_signals_until_exit(main: Pid) -> Result<u8> {
    let handled = handled_signals();
    loop {
        match handled.wait().context("wait for a signal")? {
            Signal::SIGCHLD => {
                if let Some(status) = reap_children(main)? {
                    return Ok(status);
                }
            }
            // `main` may have ended just now; then its SIGCHLD is next.
            signal => {
                let _ = kill(main, signal);
            }
        }
    }
}
// ANCHOR_END: forward_signals_until_exit

// ANCHOR: reap_children
/// Reaps every child that has ended, whoever it is: one SIGCHLD may stand for many. Returns
/// `main`'s exit status once `main` is among them.
pub fn reap_children(main: Pid) -> Result<Option<u8>> {
    // EXERCISE 2.3: collect every ended child with waitpid(-1, WNOHANG) until none is left, and return `main`'s exit status if it was one of them
    let mut main_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(main_status),
            Ok(status) if status.pid() == Some(main) => {
                main_status = exit_status(status).or(main_status);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(err) => return Err(err).context("reap ended children"),
        }
    }
    // END EXERCISE
}
// ANCHOR_END: reap_children
