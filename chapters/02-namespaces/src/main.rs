//! `ch02 run [--hostname NAME] [--init] ROOTFS -- COMMAND`: chapter 1's chroot, in new PID,
//! UTS and IPC namespaces.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use ch01_chroot::chroot::enter_rootfs;
use ch01_chroot::exec::exec_command;
use ch01_chroot::process::{require_root, EXIT_RUNTIME_FAILURE};
use ch01_chroot::rootfs::check_rootfs;
use ch02_namespaces::cli::RunArgs;
use ch02_namespaces::hostname::{check_hostname, new_container_id, set_hostname};
use ch02_namespaces::init::run_init;
use ch02_namespaces::namespaces::{spawn_in_namespaces, NAMESPACES};
use ch02_namespaces::signals::{block_signals, forward_signals_until_exit, SignalMask};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ch02",
    version,
    about = "Chapter 2: a command in new PID, UTS and IPC namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND chrooted into ROOTFS, in new PID, UTS and IPC namespaces
    Run(RunArgs),
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    match run(&args) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("ch02: {err:#}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch02")?;
    let rootfs = check_rootfs(&args.base.rootfs)?;
    let hostname = choose_hostname(args)?;
    let mask = block_signals()?;
    let child = spawn_in_namespaces(NAMESPACES, || child_setup(&rootfs, &hostname, args, &mask))?;
    forward_signals_until_exit(child)
}

/// Runs in the child, PID 1 of the new PID namespace.
fn child_setup(rootfs: &Path, hostname: &str, args: &RunArgs, mask: &SignalMask) -> u8 {
    let setup = set_hostname(hostname).and_then(|()| enter_rootfs(rootfs));
    if let Err(err) = setup {
        eprintln!("ch02: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    if !args.init {
        return exec(&args.base.command, mask);
    }
    run_init(|| exec(&args.base.command, mask)).unwrap_or_else(|err| {
        eprintln!("ch02: init: {err:#}");
        EXIT_RUNTIME_FAILURE
    })
}
// ANCHOR_END: sequence

/// The hostname asked for, or a new container id, which the user is told.
fn choose_hostname(args: &RunArgs) -> Result<String> {
    if let Some(name) = &args.hostname {
        check_hostname(name)?;
        return Ok(name.clone());
    }
    let id = new_container_id()?;
    eprintln!("ch02: container {id}");
    Ok(id)
}

/// Becomes the command, with the signal mask it would have had without us.
fn exec(command: &[String], mask: &SignalMask) -> u8 {
    if let Err(err) = mask.restore() {
        eprintln!("ch02: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let failure = exec_command(command);
    eprintln!("ch02: {failure}");
    failure.exit_code()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
