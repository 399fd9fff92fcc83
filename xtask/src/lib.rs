//! The workshop's tasks. The library part is what the integration tests share with
//! `cargo xtask`: where the project lives and the default rootfs.

use std::path::{Path, PathBuf};

pub mod rootfs;

/// The target triple that `cargo xtask` builds static helper binaries for.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The workspace root: the parent of this crate's directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}
