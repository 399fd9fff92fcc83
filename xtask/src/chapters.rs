//! The chapters of the workshop, read from chapters/*/Cargo.toml.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Deserialize;
use xtask::project_root;

use crate::vm::CgroupLayout;

#[derive(Debug)]
pub struct Chapter {
    pub number: u32,
    pub dir: PathBuf,
    /// The cargo package, `ch01-chroot`.
    pub package: String,
    /// The checks: tests/<test_name>.rs, `ch01_chroot`.
    pub test_name: String,
    /// Helpers that must run inside a rootfs without a C library.
    pub static_bins: Vec<String>,
    /// The guest cgroup layouts (`v2`) that `cargo xtask test` also runs the checks in.
    pub guest_checks: Vec<CgroupLayout>,
    /// Host programs the chapter or its checks run, with the Debian package of each.
    pub host_tools: BTreeMap<String, String>,
    /// Whether the checks load the test images made from the rootfs ([`xtask::images`]).
    pub test_images: bool,
}

impl Chapter {
    /// Makes the files the chapter's checks read, before they run (as the user, and once:
    /// not in parallel checks as root): the busybox rootfs, and the test images when the
    /// chapter asks for them (`test-images = true`).
    pub fn ensure_check_files(&self) -> Result<()> {
        xtask::rootfs::ensure_default_rootfs()?;
        if self.test_images {
            xtask::images::ensure_test_images()
                .with_context(|| format!("chapter {}'s checks need them", self.number))?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    crabbox: CrabboxMetadata,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct CrabboxMetadata {
    #[serde(default)]
    static_bins: Vec<String>,
    #[serde(default)]
    guest_checks: Vec<String>,
    #[serde(default)]
    host_tools: BTreeMap<String, String>,
    #[serde(default)]
    test_images: bool,
}

/// Every chapter of the workshop, in order. A chapter crate without exercises.toml is one
/// still being written: the tasks that check chapters leave it out until it has its
/// exercises (and its checks, tests/<test_name>.rs).
pub fn all() -> Result<Vec<Chapter>> {
    let crates = crates()?;
    Ok(crates.into_iter().filter(|chapter| chapter.dir.join("exercises.toml").is_file()).collect())
}

/// Every chapter crate, in order, those still being written too.
pub fn crates() -> Result<Vec<Chapter>> {
    let mut chapters = Vec::new();
    for entry in fs::read_dir(project_root().join("chapters"))? {
        let dir = entry?.path();
        let manifest_path = dir.join("Cargo.toml");
        let text = fs::read_to_string(&manifest_path)
            .with_context(|| format!("read {}", manifest_path.display()))?;
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("parse {}", manifest_path.display()))?;
        let number = dir_number(&dir)?;
        let metadata = manifest.package.metadata.crabbox;
        let guest_checks = metadata
            .guest_checks
            .iter()
            .map(|layout| CgroupLayout::from_str(layout, true).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()
            .with_context(|| format!("guest-checks in {}", manifest_path.display()))?;
        chapters.push(Chapter {
            number,
            test_name: manifest.package.name.replace('-', "_"),
            package: manifest.package.name,
            static_bins: metadata.static_bins,
            guest_checks,
            host_tools: metadata.host_tools,
            test_images: metadata.test_images,
            dir,
        });
    }
    chapters.sort_by_key(|chapter| chapter.number);
    Ok(chapters)
}

fn dir_number(dir: &std::path::Path) -> Result<u32> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    name.split('-')
        .next()
        .and_then(|number| number.parse().ok())
        .with_context(|| format!("chapter folder {name} does not start with its number"))
}

/// Chapter `number`, with a list of the chapters there are when it does not exist.
pub fn find(all: &[Chapter], number: u32) -> Result<&Chapter> {
    match all.iter().find(|chapter| chapter.number == number) {
        Some(chapter) => Ok(chapter),
        None => {
            if let Some(chapter) = crates()?.into_iter().find(|c| c.number == number) {
                bail!(
                    "chapter {number} is still being written: {} has no exercises.toml yet",
                    chapter.dir.display()
                )
            }
            let numbers: Vec<String> = all.iter().map(|c| c.number.to_string()).collect();
            bail!("there is no chapter {number}; the chapters are {}", numbers.join(", "))
        }
    }
}
