//! pivot_root(2): make the rootfs the root of the mount namespace, and let go of the old one.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};
use nix::unistd::{chdir, pivot_root};

// ANCHOR: pivot_root_into
/// Makes `new_root` (a mount point) the root of this mount namespace and detaches the old
/// root, so nothing of the host's tree is left to reach.
pub fn pivot_root_into(new_root: &Path) -> Result<()> {
    // EXERCISE 3.2: pivot_root into `new_root`, unmount the old root, and end up in the new `/`
    chdir(new_root).with_context(|| format!("chdir to {}", new_root.display()))?;
    // See pivot_root(2), NOTES: new_root and put_old may be the same directory. The old
    // root is then mounted on top of the new one, and unmounting `.` removes it; no
    // put_old directory is needed, which matters for a read-only rootfs.
    pivot_root(".", ".").with_context(|| format!("pivot_root into {}", new_root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).context("unmount the old root")?;
    chdir("/").context("chdir to the new /")?;
    Ok(())
    // END EXERCISE
}
// ANCHOR_END: pivot_root_into
