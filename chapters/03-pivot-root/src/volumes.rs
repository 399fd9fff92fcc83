//! Volumes: host directories or files bind-mounted into the container (`-v HOST:CONTAINER`).

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

use crate::filesystems::create_filesystem_mount_points;
use crate::mounts::make_read_only;

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// An existing host path, absolute.
    pub host: PathBuf,
    /// Where it appears inside the container: absolute, without `..`.
    pub container: PathBuf,
    pub read_only: bool,
}

/// Parses `HOST:CONTAINER[:ro|:rw]`, checking both paths before anything is created.
pub fn parse_volume(spec: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container, read_only) = match parts.as_slice() {
        [host, container] => (*host, *container, false),
        [host, container, "ro"] => (*host, *container, true),
        [host, container, "rw"] => (*host, *container, false),
        _ => return Err("expected HOST:CONTAINER, HOST:CONTAINER:ro or HOST:CONTAINER:rw".into()),
    };
    let container = PathBuf::from(container);
    if !container.is_absolute() || container.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "the container path `{}` must be absolute and without `..`, like /data",
            container.display()
        ));
    }
    let host = fs::canonicalize(host)
        .map_err(|err| format!("the host path `{host}` cannot be used: {err}; create it first"))?;
    Ok(Volume { host, container, read_only })
}

// ANCHOR: bind_volumes
/// Mounts the volumes into the bind-mounted rootfs, which `read_only` makes read-only
/// first, and its host submounts with it. The order matters: every mount point is made
/// while the rootfs can still be written, and the volumes go on top of the read-only tree
/// with flags of their own.
pub fn bind_volumes(
    rootfs: &Path,
    volumes: &[&Volume],
    read_only: bool,
    mount_points: &dyn MountPoints,
) -> Result<()> {
    let targets = volumes
        .iter()
        .map(|volume| mount_points.create(&volume.container, volume.host.is_dir()))
        .collect::<Result<Vec<PathBuf>>>()?;
    create_filesystem_mount_points(rootfs)?;
    if read_only {
        make_read_only(rootfs)?;
    }
    volumes.iter().zip(&targets).try_for_each(|(volume, target)| bind_volume(volume, target))
}
// ANCHOR_END: bind_volumes

// ANCHOR: bind_volume
/// Bind-mounts a volume onto its mount point `target` in the rootfs (before pivot_root,
/// while the host's paths are still reachable). A read-only volume is read-only all the
/// way down.
pub fn bind_volume(volume: &Volume, target: &Path) -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(&volume.host), target, None::<&str>, flags, None::<&str>).with_context(|| {
        format!("bind-mount {} on {}", volume.host.display(), volume.container.display())
    })?;
    if volume.read_only {
        // EXERCISE 3.5: make this volume's mount read-only, and every mount below it
        // See mount(2): MS_RDONLY is ignored together with MS_BIND, so the bind mount is
        // made read-only by a second call; and MS_REC brought the host's submounts of the
        // volume along, each with flags of its own, so that call must reach them too.
        make_read_only(target)?;
        // END EXERCISE
    }
    Ok(())
}
// ANCHOR_END: bind_volume

/// Makes the mount points of volumes in a container's rootfs.
pub trait MountPoints {
    /// Creates what a bind mount of a directory (`dir`) or a file needs at `path`, a path
    /// inside the container, and returns the host path to mount on.
    fn create(&self, path: &Path, dir: bool) -> Result<PathBuf>;
}

// ANCHOR: joined_paths
/// Mount points at the container's path joined to the rootfs's, as strings. A symlink in
/// the rootfs is followed on the host: with `etc -> /tmp/x`, `-v SRC:/etc/sub` creates
/// /tmp/x/sub on the host. Chapter 6, where the rootfs comes from strangers, resolves the
/// path inside the rootfs instead.
#[derive(Debug)]
pub struct JoinedPaths<'a>(pub &'a Path);

impl MountPoints for JoinedPaths<'_> {
    fn create(&self, path: &Path, dir: bool) -> Result<PathBuf> {
        let target = self.0.join(path.strip_prefix("/").unwrap_or(path));
        if dir {
            fs::create_dir_all(&target)
                .with_context(|| format!("create mount point {}", target.display()))?;
            return Ok(target);
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("create mount point {}", parent.display()))?;
        }
        if !target.exists() {
            fs::File::create(&target)
                .with_context(|| format!("create mount point {}", target.display()))?;
        }
        Ok(target)
    }
}
// ANCHOR_END: joined_paths

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_with_and_without_ro() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().canonicalize().unwrap();
        let spec = format!("{}:/data", host.display());
        let volume = parse_volume(&spec).unwrap();
        assert_eq!(
            volume,
            Volume { host: host.clone(), container: "/data".into(), read_only: false }
        );
        assert!(parse_volume(&format!("{spec}:ro")).unwrap().read_only);
        assert!(!parse_volume(&format!("{spec}:rw")).unwrap().read_only);
    }

    #[test]
    fn bad_volumes_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display();
        assert!(parse_volume(&format!("{host}:data")).unwrap_err().contains("must be absolute"));
        assert!(parse_volume(&format!("{host}:/a/../../etc")).unwrap_err().contains("`..`"));
        assert!(parse_volume("/no/such/dir:/data").unwrap_err().contains("create it first"));
        assert!(parse_volume(&format!("{host}:/data:rx")).unwrap_err().contains("expected"));
    }
}
