//! The container's mount table: private propagation, the rootfs as a mount point, and
//! read-only trees of mounts.

use std::path::Path;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

const NONE: Option<&str> = None;

// ANCHOR: make_mounts_private
/// Stops mount events from crossing between this mount namespace and the host's, in
/// both directions.
pub fn make_mounts_private() -> Result<()> {
    // EXERCISE 3.1: mark every mount of this namespace private, recursively (mount --make-rprivate /)
    // See mount_namespaces(7): a new namespace copies the host's mounts *with* their
    // propagation type. On systemd hosts `/` is shared, so without this every mount below
    // would appear on the host too, and pivot_root(2) refuses a shared parent (EINVAL).
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .context("make every mount private (mount --make-rprivate /)")
    // END EXERCISE
}
// ANCHOR_END: make_mounts_private

// ANCHOR: bind_mount_rootfs
/// Bind-mounts `rootfs` onto itself: pivot_root(2) needs the new root to be a mount point.
pub fn bind_mount_rootfs(rootfs: &Path) -> Result<()> {
    mount(Some(rootfs), rootfs, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
        .with_context(|| format!("bind-mount the rootfs {} onto itself", rootfs.display()))
}
// ANCHOR_END: bind_mount_rootfs

// ANCHOR: make_read_only
/// Makes the mount at `target` read-only, and every mount below it: a bind of a host tree
/// brings the host's submounts along, and each is a mount with flags of its own.
pub fn make_read_only(target: &Path) -> Result<()> {
    // See mount_setattr(2): unlike a remount (mount(2) with MS_REMOUNT, whose flags replace
    // all of a mount's flags and which changes one mount only), it sets just the attributes
    // named in `attr_set`, and with AT_RECURSIVE on the whole tree of mounts at `target`.
    let path = CString::new(target.as_os_str().as_bytes()).context("a path without NUL")?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a NUL-terminated string and `attr` a mount_attr of the size passed,
    // both alive for the whole call; the kernel only reads them.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    match Errno::result(result) {
        Ok(_) => Ok(()),
        Err(Errno::ENOSYS) => bail!(
            "make {} read-only: this kernel has no mount_setattr(2), which Linux 5.12 added; \
             `cargo xtask doctor` says what this host lacks",
            target.display()
        ),
        Err(errno) => Err(errno).with_context(|| {
            format!("make {} and the mounts below it read-only", target.display())
        }),
    }
}
// ANCHOR_END: make_read_only
