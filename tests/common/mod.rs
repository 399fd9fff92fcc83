//! The harness shared by the chapter tests: the chapter binaries, the busybox rootfs, shell-like
//! transcripts for snapshots, the redactions, and the chroot escape check.
//!
//! Each `tests/chNN_*.rs` includes this module and uses the part it needs.
#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A chapter binary (`ch01`, …) from the target directory of this test executable.
pub fn bin(name: &str) -> PathBuf {
    existing_binary(target_profile_dir().join(name))
}

/// A binary that `cargo xtask` builds statically for the host triple (`ch01-escape`), so it
/// runs inside a rootfs without a C library.
pub fn static_bin(name: &str) -> PathBuf {
    let profile = target_profile_dir();
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target_dir = profile.parent().expect("the profile dir is inside the target dir");
    existing_binary(target_dir.join(triple).join(profile.file_name().unwrap()).join(name))
}

fn target_profile_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test executable has a path");
    exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps").into()
}

fn existing_binary(path: PathBuf) -> PathBuf {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        path.is_file(),
        "binary `{name}` not built ({}); run the checks with `cargo xtask check-chapter N`",
        path.display()
    );
    path
}

/// A command for a chapter binary. The chapters need root; so do the checks.
pub fn command(name: &str) -> Command {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the chapter checks run containers and need root; `cargo xtask check-chapter N` \
         runs them under sudo"
    );
    Command::new(bin(name))
}

/// The shared busybox rootfs. Tests that change files inside use [`rootfs_copy`].
pub fn rootfs() -> PathBuf {
    xtask::rootfs::ensure_default_rootfs().expect("build the default rootfs")
}

/// A private copy of the busybox rootfs in a temporary directory, removed on drop.
pub struct RootfsCopy {
    pub path: PathBuf,
    _dir: TempDir,
}

pub fn rootfs_copy() -> RootfsCopy {
    let dir = temp_dir();
    let path = dir.path().join("rootfs");
    let status = Command::new("cp").arg("-a").arg(rootfs()).arg(&path).status().unwrap();
    assert!(status.success(), "copy the rootfs to {}", path.display());
    RootfsCopy { path, _dir: dir }
}

/// A temporary directory whose path the snapshot filters turn into `[TMP]`.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("crabbox-test-").tempdir().expect("create a temp dir")
}

/// One command run the way the book shows it: the command line, its output, its status.
#[derive(Debug)]
pub struct Transcript {
    pub command_line: String,
    pub stdout: String,
    pub stderr: String,
    /// The exit status, or `128 + N` when signal N ended the process (as a shell says).
    pub status: i32,
}

impl Transcript {
    pub fn run(command: &mut Command) -> Transcript {
        let output = command.output().expect("start the command");
        let status = output.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + output.status.signal().expect("a process ends by exit or by signal")
        });
        Transcript {
            command_line: xtask::command_line(command),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            status,
        }
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command_line)?;
        write!(f, "{}{}", self.stdout, self.stderr)?;
        if self.status != 0 {
            writeln!(f, "[exit status: {}]", self.status)?;
        }
        Ok(())
    }
}

/// The snapshot settings every check binds: redact only what varies between runs.
pub fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(true);
    settings.add_filter(&regex_escape(&rootfs().to_string_lossy()), "[ROOTFS]");
    settings.add_filter(r"/tmp/crabbox-test-[A-Za-z0-9]+", "[TMP]");
    settings.add_filter(r"\bpid \d+", "pid [PID]");
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| if "\\.+*?()|[]{}^$".contains(c) { format!("\\{c}") } else { c.to_string() })
        .collect()
}

/// The host's mount table, to compare before and after a run.
pub fn host_mounts() -> String {
    fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo")
}

/// Unmounts `path` (lazily) when dropped, so a check that fails half-way leaves no mount.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Chapter 1's escape, kept for every later chapter to prove that it no longer works: a
/// marker file on the host outside the rootfs, and `ch01-escape` inside a private rootfs.
pub struct EscapeCheck {
    pub rootfs: RootfsCopy,
    host_dir: TempDir,
}

pub const HOST_MARKER: &str = "crabbox host marker: this file lies outside the rootfs\n";

impl EscapeCheck {
    pub fn new() -> EscapeCheck {
        let rootfs = rootfs_copy();
        fs::copy(static_bin("ch01-escape"), rootfs.path.join("bin/ch01-escape")).unwrap();
        let host_dir = temp_dir();
        fs::write(host_dir.path().join("marker"), HOST_MARKER).unwrap();
        EscapeCheck { rootfs, host_dir }
    }

    /// The command to run in the container: try to escape and print the marker.
    pub fn command(&self) -> Vec<String> {
        let marker = self.host_dir.path().join("marker");
        vec!["/bin/ch01-escape".into(), marker.to_string_lossy().into_owned()]
    }

    /// Whether the run printed the host's marker, i.e. got out.
    pub fn reached_host(&self, transcript: &Transcript) -> bool {
        transcript.stdout == HOST_MARKER
    }
}
