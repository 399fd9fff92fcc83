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
use nix::sys::stat::{umask, Mode};

/// A `ch03 run` command. The check moves into a mount namespace of its own first, with every
/// mount shared as on a systemd host: what a runtime that does not keep its mounts private
/// mounts or unmounts reaches that namespace (where the mount-table checks look), never
/// the host's.
fn ch03_run<S: AsRef<OsStr>>(options: &[&str], rootfs: &Path, command: &[S]) -> Command {
    common::share_every_mount_of_this_check();
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
fn devices_work_for_a_user_other_than_root() {
    use std::os::unix::process::CommandExt;
    // mknod(2) applies the umask; the usual 022 would leave the devices writable by root only.
    let script = "echo gone > /dev/null && head -c 4 /dev/zero | wc -c";
    let as_nobody = ["su", "-s", "/bin/sh", "nobody", "-c", script];
    let mut ch03 = ch03_run(&[], &common::rootfs(), &as_nobody);
    let set_umask = || {
        umask(Mode::from_bits_truncate(0o022));
        Ok(())
    };
    // SAFETY: umask(2) is async-signal-safe and touches no memory of the parent.
    unsafe { ch03.pre_exec(set_umask) };
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(transcript.command_output(), "4\n", "{transcript}");
}

#[test]
fn proc_is_mounted_nosuid_nodev_noexec() {
    let script = "grep ' /proc proc ' /proc/mounts";
    let transcript = Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["sh", "-c", script]));
    let output = transcript.command_output();
    let options: Vec<&str> = output.split(' ').nth(3).unwrap_or("").split(',').collect();
    for wanted in ["nosuid", "nodev", "noexec"] {
        assert!(options.contains(&wanted), "/proc is not {wanted}: {transcript}");
    }
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
    let volume = format!("{}:/data", data.path().display());
    let options = ["--read-only", "-v", &volume];
    let mut ch03 = ch03_run(&options, &rootfs.path, &["cat", "/proc/mounts"]);
    // The "host" is the check's own namespace, where every mount is shared (see ch03_run).
    let before = common::mounts_of_this_check();
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(common::mounts_of_this_check(), before);
}

#[test]
fn the_hosts_mount_table_is_unchanged_by_a_run_that_failed_half_way() {
    let _s = common::settings().bind_to_scope();
    // A rootfs whose /dev is a file: the rootfs, /proc and /sys are mounted, /dev fails.
    let rootfs = common::rootfs_copy();
    fs::remove_dir(rootfs.path.join("dev")).unwrap();
    fs::write(rootfs.path.join("dev"), "not a directory").unwrap();
    let mut ch03 = ch03_run(&[], &rootfs.path, &["true"]);
    let before = common::mounts_of_this_check();
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(transcript.status, 125);
    assert_eq!(common::mounts_of_this_check(), before);
    assert_snapshot!("failed_half_way", transcript);
}

#[test]
fn hostname_and_pid_namespaces_still_apply() {
    let transcript =
        Transcript::run(&mut ch03_run(&[], &common::rootfs(), &["sh", "-c", "hostname; echo $$"]));
    assert_eq!(transcript.command_output(), "box\n1\n");
}

#[test]
fn descriptors_the_caller_left_open_reach_no_process_of_the_container() {
    let _s = common::settings().bind_to_scope();
    let host_dir = common::temp_dir();
    // Fd 7 is a host directory, and /proc/PID/fd/7/.. would be the host's tree.
    let script = "ls /proc/$$/fd; cat /proc/$$/fd/7/../etc/os-release";
    let mut ch03 = ch03_run(&[], &common::rootfs(), &["sh", "-c", script]);
    common::inherit_fds_on(&mut ch03, host_dir.path());
    let transcript = Transcript::run(&mut ch03);
    let refused = "0\n1\n2\ncat: can't open '/proc/1/fd/7/../etc/os-release'";
    assert!(transcript.command_output().starts_with(refused), "{transcript}");
    assert_snapshot!("inherited_fds", transcript);

    // Under --init, PID 1 is the runtime's own code, which never execs: it has to close
    // what it inherited itself, or any process inside could read it through /proc/1/fd.
    // (`ls` is not the last command: the shell would exec it, and $$ would be ls itself.)
    let script = "ls /proc/1/fd /proc/$$/fd; exit";
    let mut ch03 = ch03_run(&["--init"], &common::rootfs(), &["sh", "-c", script]);
    common::inherit_fds_on(&mut ch03, host_dir.path());
    let transcript = Transcript::run(&mut ch03);
    assert_eq!(
        transcript.command_output(),
        "/proc/1/fd:\n0\n1\n2\n\n/proc/2/fd:\n0\n1\n2\n",
        "{transcript}"
    );
}

#[test]
fn a_read_only_volume_is_read_only_below_its_submounts_too() {
    let data = common::temp_dir();
    let sub = data.path().join("sub");
    fs::create_dir(&sub).unwrap();
    mount_tmpfs(&sub);
    let _unmount = common::UnmountOnDrop(sub.clone());
    let volume = format!("{}:/tmp/data:ro", data.path().display());
    let script = "echo changed > /tmp/data/sub/note";
    let transcript =
        Transcript::run(&mut ch03_run(&["-v", &volume], &common::rootfs(), &["sh", "-c", script]));
    assert_ne!(transcript.status, 0, "{transcript}");
    assert!(transcript.output.contains("Read-only file system"), "{transcript}");
    assert!(!sub.join("note").exists(), "the write went through to the host's submount");
}

#[test]
fn read_only_covers_the_hosts_mounts_below_the_rootfs() {
    let rootfs = common::rootfs_copy();
    let sub = rootfs.path.join("mnt/sub");
    fs::create_dir_all(&sub).unwrap();
    mount_tmpfs(&sub);
    let _unmount = common::UnmountOnDrop(sub.clone());
    let script = "echo changed > /mnt/sub/note";
    let transcript =
        Transcript::run(&mut ch03_run(&["--read-only"], &rootfs.path, &["sh", "-c", script]));
    assert!(transcript.output.contains("Read-only file system"), "{transcript}");
    assert!(!sub.join("note").exists(), "the write went through to the host's submount");
}

/// Mounts a fresh tmpfs on `dir` on the host: a submount of whatever `dir` is in.
fn mount_tmpfs(dir: &Path) {
    use nix::mount::{mount, MsFlags};
    mount(Some("crabbox-test"), dir, Some("tmpfs"), MsFlags::empty(), Some("size=1m"))
        .expect("mount a tmpfs for the check");
}

#[test]
fn read_only_works_on_a_rootfs_without_proc_sys_or_dev() {
    let rootfs = common::rootfs_copy();
    for dir in ["proc", "sys", "dev"] {
        let _ = fs::remove_dir_all(rootfs.path.join(dir));
    }
    let transcript = Transcript::run(&mut ch03_run(&["--read-only"], &rootfs.path, &["/bin/true"]));
    assert_eq!(transcript.status, 0, "{transcript}");
}
