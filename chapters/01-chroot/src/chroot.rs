//! chroot(2): change the directory that `/` means for this process and its children.

use std::path::Path;

use anyhow::{Context, Result};
use nix::unistd::{chdir, chroot};

// ANCHOR: enter_rootfs
/// Makes `rootfs` the root directory of this process and moves into it.
pub fn enter_rootfs(rootfs: &Path) -> Result<()> {
    // EXERCISE 1.1: make `rootfs` this process's root directory, then make `/` its working directory
    chroot(rootfs).with_context(|| format!("chroot into {}", rootfs.display()))?;
    // See chroot(2): "This call does not change the current working directory". Without
    // the chdir the process would still stand outside its new root, and `..` from there
    // walks the host's tree.
    chdir("/").context("chdir to / inside the rootfs")?;
    Ok(())
    // END EXERCISE
}
// ANCHOR_END: enter_rootfs
