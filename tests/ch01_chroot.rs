//! Chapter 1 checks: what chroot changes, what it does not, and the errors a user meets.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{EscapeCheck, RootfsCopy, Transcript};
use insta::assert_snapshot;

fn ch01_run<S: AsRef<OsStr>>(rootfs: &Path, command: &[S]) -> Command {
    let mut ch01 = common::command("ch01");
    ch01.arg("run").arg(rootfs).arg("--").args(command);
    ch01
}

#[test]
fn ls_root_shows_the_rootfs() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch01_run(&common::rootfs(), &["ls", "/"]));
    assert_snapshot!("ls_root", transcript);
}

#[test]
fn os_release_is_the_rootfs_one() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch01_run(&common::rootfs(), &["cat", "/etc/os-release"]));
    assert_ne!(transcript.command_output(), fs::read_to_string("/etc/os-release").unwrap());
    assert_snapshot!("os_release", transcript);
}

#[test]
fn working_directory_is_the_new_root() {
    let transcript = Transcript::run(&mut ch01_run(&common::rootfs(), &["sh", "-c", "pwd; ls"]));
    let listing = Transcript::run(&mut ch01_run(&common::rootfs(), &["ls", "/"]));
    assert_eq!(transcript.command_output(), format!("/\n{}", listing.command_output()));
}

#[test]
fn exit_status_is_the_commands() {
    let transcript = Transcript::run(&mut ch01_run(&common::rootfs(), &["sh", "-c", "exit 3"]));
    assert_eq!(transcript.status, 3);
}

#[test]
fn killed_by_a_signal_exits_with_128_plus_its_number() {
    let _s = common::settings().bind_to_scope();
    let mut ch01 = ch01_run(&common::rootfs(), &["sh", "-c", "kill -KILL $$"]);
    let transcript = Transcript::run(&mut ch01);
    assert_eq!(transcript.status, 128 + 9);
    assert_snapshot!("killed_by_signal", transcript);
}

#[test]
fn stdin_reaches_the_command() {
    use std::io::Write;
    use std::process::Stdio;
    let mut ch01 = ch01_run(&common::rootfs(), &["tr", "a-z", "A-Z"]);
    let mut child = ch01.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"crab\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "CRAB\n");
}

#[test]
fn missing_rootfs_fails_with_125() {
    let _s = common::settings().bind_to_scope();
    let dir = common::temp_dir();
    let transcript = Transcript::run(&mut ch01_run(&dir.path().join("nope"), &["ls"]));
    assert_eq!(transcript.status, 125);
    assert_snapshot!("missing_rootfs", transcript);
}

#[test]
fn rootfs_that_is_a_file_fails_with_125() {
    let _s = common::settings().bind_to_scope();
    let dir = common::temp_dir();
    let file = dir.path().join("rootfs.tar");
    fs::write(&file, "").unwrap();
    let transcript = Transcript::run(&mut ch01_run(&file, &["ls"]));
    assert_eq!(transcript.status, 125);
    assert_snapshot!("rootfs_is_a_file", transcript);
}

#[test]
fn not_root_fails_with_125_and_says_to_use_sudo() {
    use std::os::unix::process::CommandExt;
    let _s = common::settings().bind_to_scope();
    let mut ch01 = ch01_run(&common::rootfs(), &["ls"]);
    ch01.uid(65534).gid(65534);
    let transcript = Transcript::run(&mut ch01);
    assert_eq!(transcript.status, 125);
    assert_snapshot!("not_root", transcript);
}

#[test]
fn command_not_found_exits_127() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch01_run(&common::rootfs(), &["bash"]));
    assert_eq!(transcript.status, 127);
    assert_snapshot!("command_not_found", transcript);
}

#[test]
fn dynamically_linked_command_says_its_loader_is_missing() {
    let _s = common::settings().bind_to_scope();
    let rootfs = common::rootfs_copy();
    // A host binary linked against glibc, whose loader the busybox rootfs does not have.
    fs::copy(common::bin("ch01"), rootfs.path.join("bin/ch01")).unwrap();
    let transcript = Transcript::run(&mut ch01_run(&rootfs.path, &["/bin/ch01", "--help"]));
    assert_eq!(transcript.status, 127);
    assert!(transcript.output.contains("dynamically linked"), "{transcript}");
    assert_snapshot!("missing_loader", transcript);
}

#[test]
fn file_that_is_not_executable_exits_126() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch01_run(&common::rootfs(), &["/etc/os-release"]));
    assert_eq!(transcript.status, 126);
    assert_snapshot!("not_executable", transcript);
}

#[test]
fn network_interfaces_are_still_the_hosts() {
    let inside = Transcript::run(&mut ch01_run(&common::rootfs(), &["ip", "-o", "link"]));
    assert_eq!(inside.status, 0, "{inside}");
    let mut inside_names: Vec<String> = inside
        .command_output()
        .lines()
        .map(|line| line.split(": ").nth(1).unwrap().split('@').next().unwrap().to_string())
        .collect();
    let mut host_names: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inside_names.sort();
    host_names.sort();
    assert_eq!(inside_names, host_names);
}

#[test]
fn host_processes_are_visible_once_proc_is_mounted() {
    let rootfs: RootfsCopy = common::rootfs_copy();
    let mounts_before = common::host_mounts();
    let _unmount = common::UnmountOnDrop(rootfs.path.join("proc"));
    // This test's own process runs on the host, outside the chroot.
    let script =
        format!("mount -t proc proc /proc && cat /proc/{}/comm; umount /proc", std::process::id());
    let transcript = Transcript::run(&mut ch01_run(&rootfs.path, &["sh", "-c", &script]));
    let this_test = fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(transcript.command_output(), this_test, "{transcript}");
    assert_eq!(common::host_mounts(), mounts_before, "the run left a mount behind");
}

#[test]
fn root_can_walk_out_of_a_chroot() {
    let _s = common::settings().bind_to_scope();
    let escape = EscapeCheck::new();
    let transcript = Transcript::run(&mut ch01_run(&escape.rootfs.path, &escape.command()));
    assert!(escape.reached_host(&transcript), "the escape did not reach the host: {transcript}");
    assert_snapshot!("escape", transcript);
}
