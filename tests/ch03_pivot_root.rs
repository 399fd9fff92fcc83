//! Chapter 3 checks: the container's own mount table, rooted in the rootfs by pivot_root,
//! with its own /proc, a read-only /sys and a minimal /dev; and the host's mount table
//! untouched.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{EscapeCheck, Transcript};
use insta::assert_snapshot;

fn ch03_run<S: AsRef<OsStr>>(options: &[&str], rootfs: &Path, command: &[S]) -> Command {
    let mut ch03 = common::command("ch03");
    ch03.arg("run").args(["--hostname", "box"]).args(options).arg(rootfs).arg("--").args(command);
    ch03
}

#[test]
fn the_chroot_escape_no_longer_reaches_the_host() {
    let _s = common::settings().bind_to_scope();
    let escape = EscapeCheck::new();
    let transcript = Transcript::run(&mut ch03_run(&[], &escape.rootfs.path, &escape.command()));
    assert!(!escape.reached_host(&transcript), "the escape reached the host: {transcript}");
    assert_snapshot!("escape_fails", transcript);
}

#[test]
fn ps_lists_only_the_containers_processes() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["ps"]));
    assert_eq!(transcript.command_output().lines().count(), 2, "{transcript}");
    assert_snapshot!("ps", transcript);
}

#[test]
fn dev_holds_exactly_the_standard_devices() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["ls", "/dev"]));
    assert_snapshot!("ls_dev", transcript);
}

#[test]
fn devices_work() {
    let script = "echo gone > /dev/null && head -c 4 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c && echo out > /dev/stdout";
    let transcript = Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["sh", "-c", script]));
    assert_eq!(transcript.command_output(), "4\n8\nout\n", "{transcript}");
}

#[test]
fn sys_is_read_only() {
    let _s = common::settings().bind_to_scope();
    let script = r#"grep " /sys " /proc/mounts; echo 1 > /sys/kernel/profiling"#;
    let transcript = Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["sh", "-c", script]));
    assert_ne!(transcript.status, 0, "{transcript}");
    assert_snapshot!("sys_read_only", transcript);
}

#[test]
fn read_only_blocks_writes_to_root_but_not_to_dev_shm() {
    let _s = common::settings().bind_to_scope();
    let rootfs = common::rootfs_copy();
    let script = "touch /new-file; touch /dev/shm/scratch && echo /dev/shm is writable";
    let mut ch03 = ch03_run(&["--read-only"], &rootfs.path, &["sh", "-c", script]);
    let transcript = Transcript::run(&mut ch03);
    assert!(!rootfs.path.join("new-file").exists());
    assert_snapshot!("read_only", transcript);
}

#[test]
fn a_volume_write_is_visible_on_the_host() {
    let rootfs = common::rootfs_copy();
    let data = common::temp_dir();
    let volume = format!("{}:/data", data.path().display());
    let script = "echo written inside > /data/note";
    let mut ch03 = ch03_run(&["-v", &volume], &rootfs.path, &["sh", "-c", script]);
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(fs::read_to_string(data.path().join("note")).unwrap(), "written inside\n");
}

#[test]
fn a_read_only_volume_is_not_writable() {
    let _s = common::settings().bind_to_scope();
    let rootfs = common::rootfs_copy();
    let data = common::temp_dir();
    fs::write(data.path().join("note"), "from the host\n").unwrap();
    let volume = format!("{}:/data:ro", data.path().display());
    let script = "cat /data/note; echo changed > /data/note";
    let mut ch03 = ch03_run(&["-v", &volume], &rootfs.path, &["sh", "-c", script]);
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(fs::read_to_string(data.path().join("note")).unwrap(), "from the host\n");
    assert_snapshot!("read_only_volume", transcript);
}

#[test]
fn a_missing_volume_source_is_refused() {
    let _s = common::settings().bind_to_scope();
    let mut ch03 = ch03_run(&["-v", "/no/such/dir:/data"], &common::rootfs(), &["true"]);
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(transcript.status, 2);
    assert_snapshot!("volume_missing_source", transcript);
}

#[test]
fn a_relative_volume_target_is_refused() {
    let _s = common::settings().bind_to_scope();
    let data = common::temp_dir();
    let volume = format!("{}:data", data.path().display());
    let transcript = Transcript::run(&mut ch03_run(&["-v", &volume], &common::rootfs(), &["true"]));
    assert_eq!(transcript.status, 2);
    assert_snapshot!("volume_relative_target", transcript);
}

#[test]
fn the_hosts_mount_table_is_unchanged_by_a_run() {
    let rootfs = common::rootfs_copy();
    let data = common::temp_dir();
    let volume = format!("{}:/data:ro", data.path().display());
    let before = common::host_mounts();
    let options = ["--read-only", "-v", &volume];
    let transcript =
        Transcript::run(&mut ch03_run(&options, &rootfs.path, &["cat", "/proc/mounts"]));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(common::host_mounts(), before);
}

#[test]
fn the_hosts_mount_table_is_unchanged_by_a_run_that_failed_half_way() {
    let _s = common::settings().bind_to_scope();
    // A rootfs whose /dev is a file: the rootfs, /proc and /sys are mounted, /dev fails.
    let rootfs = common::rootfs_copy();
    fs::remove_dir(rootfs.path.join("dev")).unwrap();
    fs::write(rootfs.path.join("dev"), "not a directory").unwrap();
    let before = common::host_mounts();
    let transcript = Transcript::run(&mut ch03_run(&[], &rootfs.path, &["true"]));
    assert_eq!(transcript.status, 125);
    assert_eq!(common::host_mounts(), before);
    assert_snapshot!("failed_half_way", transcript);
}

#[test]
fn hostname_and_pid_namespaces_still_apply() {
    let transcript =
        Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["sh", "-c", "hostname; echo $$"]));
    assert_eq!(transcript.command_output(), "box\n1\n");
}
