//! The rootfs: a directory holding every file the container will see.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Checks that `path` is a directory that can become the container's root, and returns its
/// absolute path.
pub fn check_rootfs(path: &Path) -> Result<PathBuf> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let rootfs = path
                .canonicalize()
                .with_context(|| format!("resolve rootfs {}", path.display()))?;
            if rootfs == Path::new("/") {
                bail!(
                    "rootfs {} is the host's root directory, which cannot be a container's \
                     root: a container on it would share every host file; give a directory \
                     with the container's own files (`cargo xtask rootfs` builds one)",
                    path.display()
                );
            }
            Ok(rootfs)
        }
        Ok(_) => bail!(
            "rootfs {} is not a directory; give the directory that should become / inside",
            path.display()
        ),
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "rootfs {} does not exist; `cargo xtask rootfs` builds a busybox one",
            path.display()
        ),
        Err(err) => Err(err).with_context(|| format!("inspect rootfs {}", path.display())),
    }
}
