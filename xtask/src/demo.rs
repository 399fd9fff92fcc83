//! `cargo xtask demo`: a short narrated tour of what the most advanced chapter isolates. It
//! prepares what a fresh machine lacks (the rootfs, the binaries), runs every container as
//! root (with sudo when needed) and leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use xtask::images::{ensure_test_images, TestImages};
use xtask::process::{as_root, command_line};
use xtask::rootfs::ensure_default_rootfs;

use crate::cargo::{build_chapter, Binaries};
use crate::chapters;

pub fn demo() -> Result<()> {
    let all = chapters::all()?;
    let latest = all.last().context("no chapters yet")?;
    println!("Preparing: the busybox rootfs and the chapter binaries.");
    let rootfs = ensure_default_rootfs()?;
    let binaries = build_chapter(latest, &all)?;
    let scratch = Scratch::new(&rootfs, &binaries)?;
    let binary = format!("ch{:02}", latest.number);
    println!("\nA tour of `{binary}`, the latest chapter: a container, one mechanism at a time.");
    let images = ensure_test_images()?;
    tour(binaries.bin(&binary)?, &scratch, &images)?;
    println!("\nThe book explains each step: `cargo xtask book --serve`.");
    Ok(())
}

/// A copy of the rootfs with chapter 1's escape in it, and an image store, removed (as
/// root) when dropped.
struct Scratch {
    dir: PathBuf,
    rootfs: String,
    store: String,
}

impl Scratch {
    fn new(rootfs: &Path, binaries: &Binaries) -> Result<Scratch> {
        // A new folder only we can enter (mode 0700, a random name): what runs as root here
        // must not use a folder someone else prepared.
        let dir = tempfile::Builder::new().prefix("crabbox-demo-").tempdir()?.keep();
        let copy = dir.join("rootfs");
        let copied = Command::new("cp").arg("-a").arg(rootfs).arg(&copy).status()?;
        ensure!(copied.success(), "copy the rootfs to {}", copy.display());
        let escape = binaries.static_bin("ch01-escape")?;
        fs::copy(escape, copy.join("bin/ch01-escape"))
            .with_context(|| format!("copy {} into the rootfs", escape.display()))?;
        let store = dir.join("store").to_string_lossy().into_owned();
        Ok(Scratch { rootfs: copy.to_string_lossy().into_owned(), store, dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = as_root(Path::new("rm")).arg("-rf").arg(&self.dir).status();
    }
}

fn tour(binary: &Path, scratch: &Scratch, images: &TestImages) -> Result<()> {
    let store = ["--root", scratch.store.as_str()];
    let ch06 = |say: &str, args: &[&str]| step(say, binary, &[&store[..], args].concat());
    // Chapters 1-5 on a plain directory, as they ran.
    let run = |say: &str, options: &[&str], command: &[&str]| -> Result<()> {
        let rootfs = ["--rootfs", scratch.rootfs.as_str()];
        ch06(say, &[&["run"][..], options, &rootfs, command].concat())
    };
    run(
        "Chapter 1, chroot: `/` is the rootfs, a static busybox and little else.",
        &[],
        &["ls", "/"],
    )?;
    run(
        "Chapter 2, UTS namespace: a hostname of its own.",
        &["--hostname", "crab"],
        &["hostname"],
    )?;
    run(
        "Chapter 2, PID namespace: the command is PID 1.",
        &[],
        &["sh", "-c", "echo my pid is $$"],
    )?;
    run(
        "Chapter 2, --init: a real init as PID 1 reaps zombies and passes on signals.",
        &["--init"],
        &["sh", "-c", "echo my pid is $$; ps"],
    )?;
    run("Chapter 3, mount namespace and its own /proc: ps sees only the container.", &[], &["ps"])?;
    run("Chapter 3, a minimal /dev: none of the host's disks.", &[], &["ls", "/dev"])?;
    run(
        "Chapter 3, pivot_root: chapter 1's escape climbs `..` and stays inside.",
        &[],
        &["/bin/ch01-escape", "/etc/hostname"],
    )?;
    run(
        "Chapter 3, --read-only: the rootfs cannot be changed; /dev/shm still can.",
        &["--read-only"],
        &["sh", "-c", "touch /file; touch /dev/shm/file && echo /dev/shm is fine"],
    )?;
    run(
        "Chapter 4, cgroups: at most 10 processes; the eleventh fork fails.",
        &["--pids-limit", "10"],
        &["sh", "-c", "for i in $(seq 1 20); do sleep 1 & done 2>&1 | head -n 1"],
    )?;
    run(
        "Chapter 5, network namespace: lo and an eth0 of its own, with an address on crabbox0.",
        &[],
        &["ip", "-o", "-4", "addr"],
    )?;
    run(
        "Chapter 5, veth and bridge: the container reaches the host through its gateway.",
        &[],
        &["ping", "-c", "1", "10.88.0.1"],
    )?;
    run("Chapter 5, --net none: only lo.", &["--net", "none"], &["ip", "-o", "link"])?;
    let layout = images.busybox_layout();
    let layout = layout.to_string_lossy();
    ch06(
        "Chapter 6, images: an OCI layout made by umoci, loaded into the store.",
        &["image", "load", &layout],
    )?;
    ch06("Chapter 6, the store lists it.", &["image", "ls"])?;
    ch06(
        "Chapter 6, a container is the image's layers plus one writable layer of its own.",
        &["run", "--net", "none", "busybox", "sh", "-c", "rm /etc/group; echo hi > /root/note"],
    )?;
    ch06("Chapter 6, ps -a lists it, stopped, with its layer kept.", &["ps", "-a"])?;
    ch06(
        "Chapter 6, another container of the same image sees none of that.",
        &["run", "--rm", "--net", "none", "busybox", "ls", "/etc/group", "/root"],
    )?;
    run(
        "Still shared with the host: user ids, root inside is root outside (chapter 7 will change that).",
        &[],
        &["cat", "/proc/self/uid_map"],
    )
}

/// Says what comes next, then runs the chapter binary with `args`, as root.
fn step(say: &str, binary: &Path, args: &[&str]) -> Result<()> {
    println!("\n# {say}");
    let mut command = as_root(binary);
    command.args(args);
    println!("$ {}", command_line(&command).trim_start_matches("sudo -E "));
    command.status().with_context(|| format!("run {}", binary.display()))?;
    Ok(())
}
