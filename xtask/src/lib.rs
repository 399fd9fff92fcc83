//! The workshop's tasks. The library part is what the integration tests share with
//! `cargo xtask`: where the project lives and the default rootfs.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod host_tools;
pub mod rootfs;

/// The target triple that `cargo xtask` builds static helper binaries for.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The workspace root: the parent of this crate's directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

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

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+-,".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
