//! The container's mount table: private propagation, the rootfs as a mount point, and a
//! read-only root.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

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

// ANCHOR: remount_read_only
/// Makes the bind mount at `target` read-only. Only that mount: the ones on top of it
/// (/proc, /dev, volumes) keep their own flags.
pub fn remount_read_only(target: &Path) -> Result<()> {
    // See mount(2), MS_REMOUNT: the flags given replace the mount's flags, so nosuid,
    // nodev and noexec copied from the host would be dropped unless passed again.
    let kept = kept_flags(target)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
    mount(NONE, target, NONE, flags, NONE)
        .with_context(|| format!("remount {} read-only", target.display()))
}
// ANCHOR_END: remount_read_only

/// The per-mount flags of the mount at `target` that a remount must repeat.
fn kept_flags(target: &Path) -> Result<MsFlags> {
    let current = statvfs(target).with_context(|| format!("statvfs {}", target.display()))?;
    let pairs = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    Ok(pairs
        .into_iter()
        .filter(|(has, _)| current.flags().contains(*has))
        .fold(MsFlags::empty(), |flags, (_, add)| flags | add))
}
