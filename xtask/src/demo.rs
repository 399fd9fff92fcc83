//! `cargo xtask demo`: a short narrated tour of the most advanced chapter. It prepares what a
//! fresh machine lacks (the rootfs, the binaries), runs every container as root (with sudo
//! when needed) and leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use xtask::rootfs::ensure_default_rootfs;
use xtask::{command_line, host_triple, project_root};

use crate::cargo::{as_root, build_chapter};
use crate::chapters;

pub fn demo() -> Result<()> {
    let all = chapters::all()?;
    let chapter = all.last().context("no chapters yet")?;
    println!("Preparing: the busybox rootfs and the chapter binaries.");
    let rootfs = ensure_default_rootfs()?;
    build_chapter(chapter, &all)?;
    chroot_tour(&rootfs)
}

fn target_bin(name: &str) -> PathBuf {
    project_root().join("target/debug").join(name)
}

fn static_bin(name: &str) -> PathBuf {
    project_root().join("target").join(host_triple()).join("debug").join(name)
}

/// Says what comes next, then runs `args` with the chapter binary, as root.
fn step(say: &str, binary: &str, args: &[&str]) -> Result<()> {
    println!("\n# {say}");
    let mut command = as_root(&target_bin(binary));
    command.args(args);
    println!("$ {}", command_line(&command).trim_start_matches("sudo -E "));
    command.status().with_context(|| format!("run {binary}"))?;
    Ok(())
}

fn chroot_tour(rootfs: &Path) -> Result<()> {
    let root = rootfs.to_string_lossy();
    println!("\nChapter 1: chroot(2) gives a process its own `/`, here {root}.");
    step(
        "Inside, / is the rootfs: a static busybox and little else.",
        "ch01",
        &["run", &root, "--", "ls", "/"],
    )?;
    step(
        "Its /etc/os-release is the rootfs's, not the host's.",
        "ch01",
        &["run", &root, "--", "cat", "/etc/os-release"],
    )?;
    step(
        "But the network is still the host's: the same interfaces.",
        "ch01",
        &["run", &root, "--", "sh", "-c", "ip -o link | cut -d: -f2"],
    )?;

    let scratch = tempfile_dir()?;
    let copy = scratch.join("rootfs");
    let copied = Command::new("cp").arg("-a").arg(rootfs).arg(&copy).status()?;
    anyhow::ensure!(copied.success(), "copy the rootfs to {}", copy.display());
    let copy_root = copy.to_string_lossy().into_owned();
    let result = (|| {
        step(
            "And the process table: mount /proc inside and the host's processes are there.",
            "ch01",
            &[
                "run",
                &copy_root,
                "--",
                "sh",
                "-c",
                "mount -t proc proc /proc && ps | head -6; umount /proc",
            ],
        )?;
        fs::copy(static_bin("ch01-escape"), copy.join("bin/ch01-escape"))?;
        step(
            "And root walks out: chroot again into a subdirectory, climb `..`, read the host's /etc/hostname.",
            "ch01",
            &["run", &copy_root, "--", "/bin/ch01-escape", "/etc/hostname"],
        )
    })();
    let _ = as_root(Path::new("rm")).arg("-rf").arg(&scratch).status();
    result?;
    println!("\nchroot changes what `/` means, nothing else. Chapter 2 starts with namespaces.");
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("crabbox-demo-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
