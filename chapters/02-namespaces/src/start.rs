//! The last step of the container's first process: become the command, as PID 1 or under
//! a minimal init (`--init`).

use std::fmt::Display;

use ch01_chroot::exec::exec_command;
use ch01_chroot::process::EXIT_RUNTIME_FAILURE;

use crate::init::run_init;
use crate::signals::SignalMask;

/// Says why the container could not start. The process that fails may be the init's child,
/// which has no other way to tell anyone, so the runtime passes in how to print.
pub type Report<'a> = &'a dyn Fn(&dyn Display);

// ANCHOR: start_command
/// Becomes `command` with the environment `env`: directly, or as the child of a minimal
/// init when `init` is set. Returns the exit status to end with: the command's under
/// `--init`, or the failure's.
pub fn start_command(
    command: &[String],
    env: &[String],
    init: bool,
    mask: &SignalMask,
    report: Report,
) -> u8 {
    if !init {
        return exec_unmasked(command, env, mask, report);
    }
    run_init(|| exec_unmasked(command, env, mask, report)).unwrap_or_else(|err| {
        report(&format_args!("init: {err:#}"));
        EXIT_RUNTIME_FAILURE
    })
}
// ANCHOR_END: start_command

/// Execs `command` with the signal mask it would have had without the runtime: a blocked
/// mask survives execve(2). Returns only when that failed.
fn exec_unmasked(command: &[String], env: &[String], mask: &SignalMask, report: Report) -> u8 {
    if let Err(err) = mask.restore() {
        report(&format_args!("{err:#}"));
        return EXIT_RUNTIME_FAILURE;
    }
    let failure = exec_command(command, env);
    report(&failure);
    failure.exit_code()
}
