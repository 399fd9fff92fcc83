//! The workshop's tasks. The library part is what the integration tests share with
//! `cargo xtask`, in layers that only look down: [`process`] (running programs) and the
//! paths here at the bottom, then [`host_tools`] and [`rootfs`] above them, and [`images`]
//! (chapter 6's test images, made from the rootfs) on top; [`includes`] checks the book's
//! code includes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

pub mod host_tools;
pub mod images;
pub mod includes;
pub mod process;
pub mod rootfs;

/// The target triple that `cargo xtask` builds static helper binaries for.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The workspace root: the parent of this crate's directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

/// The environment variable through which `cargo xtask` tells the checks where it built the
/// binary `name` (`CRABBOX_BIN_CH03`, `CRABBOX_STATIC_BIN_CH01_ESCAPE`): the target
/// directory is cargo's to choose (CARGO_TARGET_DIR), and cargo says where it put each one.
pub fn binary_var(name: &str, statically_linked: bool) -> String {
    let kind = if statically_linked { "STATIC_BIN" } else { "BIN" };
    format!("CRABBOX_{kind}_{}", name.to_uppercase().replace('-', "_"))
}

/// Makes sure the directory `dir` exists, filling it with `build` first when it does not.
/// `build` fills a staging directory beside `dir`, which is then renamed into place, so
/// `dir` exists only once it is complete: a crash never leaves half of it, and parallel
/// callers (threads here, other processes by the staging name) find none or all of it.
pub fn build_in_place(dir: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_builder = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if dir.is_dir() {
        return Ok(());
    }
    let name = dir.file_name().context("a directory to build has a name")?.to_string_lossy();
    let staging = dir.with_file_name(format!("{name}.staging-{}", std::process::id()));
    let built = build(&staging).and_then(|()| {
        fs::rename(&staging, dir).with_context(|| format!("move {} into place", dir.display()))
    });
    if let Err(err) = built {
        let _ = fs::remove_dir_all(&staging);
        // Another process may have won the race; its directory is as good as ours.
        if !dir.is_dir() {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("thing");
        let failed = build_in_place(&dir, |staging| {
            fs::create_dir(staging)?;
            anyhow::bail!("half-way")
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
        build_in_place(&dir, |staging| Ok(fs::create_dir(staging)?)).unwrap();
        assert!(dir.is_dir());
    }
}
