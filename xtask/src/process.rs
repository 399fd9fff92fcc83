//! Running programs the way every task needs them: found on the PATH, echoed as a user
//! would type them, as root when they must be, and failing with the command that failed.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

/// `command` as a user would type it: the program's file name, then the arguments, quoted
/// for a POSIX shell where needed.
pub fn command_line(command: &Command) -> String {
    let program = Path::new(command.get_program()).file_name().unwrap_or_default();
    let args = command.get_args().map(|arg| shell_quote(&arg.to_string_lossy()));
    std::iter::once(program.to_string_lossy().into_owned())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` as one word for a POSIX shell: as it is when that is safe, else in single quotes
/// with each `'` written as `'\''`.
pub fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+-,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Echoes `command` as `$ …`, runs it, and fails unless it succeeds.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("$ {}", command_line(command));
    let status = command.status().with_context(|| format!("start {}", command_line(command)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", command_line(command));
    }
    Ok(())
}

/// Runs `command` quietly and returns its standard output; fails unless it succeeds.
pub fn output_of(command: &mut Command) -> Result<String> {
    let what = command_line(command);
    let output =
        command.stderr(Stdio::inherit()).output().with_context(|| format!("run {what}"))?;
    ensure!(output.status.success(), "`{what}` failed ({})", output.status);
    String::from_utf8(output.stdout).with_context(|| format!("read the output of {what}"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A command for `program` that runs as root: directly when we are root, else with sudo.
pub fn as_root(program: &Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(program);
        sudo
    }
}

/// Where the program `name` is: `name` itself when it is a path (made absolute), else the
/// first executable of that name on the PATH or in the sbin directories a normal user's
/// PATH may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return std::path::absolute(name).ok();
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    env::split_paths(&path).chain(sbin).map(|dir| dir.join(name)).find(|candidate| {
        fs::metadata(candidate)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_words_that_need_it_are_quoted() {
        assert_eq!(shell_quote("--net=none"), "--net=none");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("echo $HOME"), "'echo $HOME'");
    }

    #[test]
    fn programs_are_found_on_the_path() {
        assert!(find_program("sh").is_some_and(|sh| sh.is_absolute()));
        assert_eq!(find_program("crabbox-no-such-program"), None);
    }
}
