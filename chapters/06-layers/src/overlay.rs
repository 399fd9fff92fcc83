//! overlayfs: the image's layers, read-only, under the container's own writable layer,
//! merged into one tree (see the kernel's Documentation/filesystems/overlayfs.rst).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ch03_pivot_root::mounts::make_mounts_private;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The directories of one overlay mount.
#[derive(Debug)]
pub struct Overlay<'a> {
    /// The image's layers, bottom first, as the manifest lists them.
    pub lowers: &'a [PathBuf],
    /// Where the container's changes go.
    pub upper: &'a Path,
    /// overlayfs's scratch space: an empty directory on the same filesystem as `upper`.
    pub work: &'a Path,
}

// ANCHOR: overlay_options
/// The mount options of the overlay. `lowerdir` lists the layers top first: a name in an
/// earlier one hides the same name in a later one, so the last layer of the manifest (the
/// newest) must come first.
pub fn overlay_options(overlay: &Overlay) -> Result<String> {
    for dir in overlay.lowers.iter().map(PathBuf::as_path).chain([overlay.upper, overlay.work]) {
        check_option_path(dir)?;
    }
    // `diff` and `commit` read the upper as whole files and whiteouts: no renamed directory
    // recorded as a redirect, no file copied up as metadata only (overlayfs.rst,
    // "Redirect dir" and "Metadata only copy up"), whatever the host's defaults are.
    Ok(format!("{},redirect_dir=off,metacopy=off", layer_options(overlay)))
}

/// The options that name the overlay's directories.
fn layer_options(overlay: &Overlay) -> String {
    // EXERCISE 6.2: build overlayfs's options: lowerdir (top layer first, joined by ':'), upperdir and workdir
    // See Documentation/filesystems/overlayfs.rst, "Multiple lower layers": the layers are
    // given top first; `upperdir` takes the writes and `workdir` is overlayfs's own.
    let lowers: Vec<String> =
        overlay.lowers.iter().rev().map(|dir| dir.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        overlay.upper.display(),
        overlay.work.display()
    )
    // END EXERCISE
}
// ANCHOR_END: overlay_options

// ANCHOR: mount_overlay
/// Mounts the overlay on `merged`.
pub fn mount_overlay(overlay: &Overlay, merged: &Path) -> Result<()> {
    if overlay.lowers.is_empty() {
        bail!("an image needs at least one layer");
    }
    let options = overlay_options(overlay)?;
    // The options are one page at most (mount(2), "data"); each layer takes about 90 bytes
    // of it, so an image of more than about 40 layers would need shorter paths.
    if options.len() >= 4096 {
        bail!("this image has too many layers ({}) for one overlay mount", overlay.lowers.len());
    }
    mount(Some("overlay"), merged, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .with_context(|| format!("mount the image's layers with overlayfs on {}", merged.display()))
}
// ANCHOR_END: mount_overlay

pub fn unmount_overlay(merged: &Path) -> Result<()> {
    umount2(merged, MntFlags::empty()).with_context(|| format!("unmount {}", merged.display()))
}

/// `,` separates mount options and `:` lower layers; a path holding either, or the `\`
/// that would escape them, cannot be said in the options.
fn check_option_path(dir: &Path) -> Result<()> {
    let text = dir.display().to_string();
    if text.contains([',', ':', '\\']) {
        bail!("{text} cannot be an overlay directory: its path holds `,`, `:` or `\\`");
    }
    Ok(())
}

// ANCHOR: isolate_runtime_mounts
/// Gives the runtime a mount namespace of its own, private in both directions: the
/// overlay it mounts there is seen by the container it starts (whose namespace is a copy)
/// and by nobody on the host, and the kernel takes it away with the last process in it, so
/// even a runtime killed with SIGKILL leaves no mount behind.
pub fn isolate_runtime_mounts() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("give the runtime a mount namespace (unshare)")?;
    make_mounts_private()
}
// ANCHOR_END: isolate_runtime_mounts

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_layer_comes_first() {
        let lowers = [PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        let overlay =
            Overlay { lowers: &lowers, upper: Path::new("/c/upper"), work: Path::new("/c/work") };
        assert_eq!(
            overlay_options(&overlay).unwrap(),
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work,redirect_dir=off,metacopy=off"
        );
    }

    #[test]
    fn paths_that_the_options_cannot_hold_are_refused() {
        let lowers = [PathBuf::from("/l/a,b")];
        let overlay = Overlay { lowers: &lowers, upper: Path::new("/u"), work: Path::new("/w") };
        assert!(overlay_options(&overlay).unwrap_err().to_string().contains("holds"));
    }
}
