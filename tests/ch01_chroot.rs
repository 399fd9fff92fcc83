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
    // Commands named by their path: this check and 1.2's need no $PATH search (exercise 1.3).
    let transcript =
        Transcript::run(&mut ch01_run(&common::rootfs(), &["/bin/sh", "-c", "pwd; ls"]));
    let listing = Transcript::run(&mut ch01_run(&common::rootfs(), &["/bin/ls", "/"]));
    assert_eq!(transcript.command_output(), format!("/\n{}", listing.command_output()));
}

#[test]
fn exit_status_is_the_commands() {
    let transcript =
        Transcript::run(&mut ch01_run(&common::rootfs(), &["/bin/sh", "-c", "exit 3"]));
    assert_eq!(transcript.status, 3);
}

#[test]
fn killed_by_a_signal_exits_with_128_plus_its_number() {
    let _s = common::settings().bind_to_scope();
    let mut ch01 = ch01_run(&common::rootfs(), &["/bin/sh", "-c", "kill -KILL $$"]);
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
fn a_directory_on_the_path_is_not_the_command() {
    // The first directory of the container's PATH holds a directory named like the
    // command, the last one the command itself: only a file is a command (execvp(3)).
    let rootfs = common::rootfs_copy();
    let path = Transcript::run(&mut ch01_run(&rootfs.path, &["sh", "-c", "echo \"$PATH\""]));
    let path = path.command_output();
    let dirs: Vec<&str> = path.trim().split(':').filter(|dir| !dir.is_empty()).collect();
    assert!(dirs.len() >= 2, "the container's PATH has two directories at least: {path}");
    let inside = |dir: &str| rootfs.path.join(dir.trim_start_matches('/'));
    fs::create_dir_all(inside(dirs[0]).join("crabbox-tool")).unwrap();
    let tool = inside(dirs[dirs.len() - 1]).join("crabbox-tool");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    fs::write(&tool, "#!/bin/sh\necho the tool ran\n").unwrap();
    fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let transcript = Transcript::run(&mut ch01_run(&rootfs.path, &["crabbox-tool"]));
    assert_eq!((transcript.command_output().as_str(), transcript.status), ("the tool ran\n", 0));
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

fn ch01_run_with<S: AsRef<OsStr>>(options: &[&str], rootfs: &Path, command: &[S]) -> Command {
    let mut ch01 = common::command("ch01");
    ch01.arg("run").args(options).arg(rootfs).arg("--").args(command);
    ch01
}

#[test]
fn descriptors_the_caller_left_open_do_not_reach_the_command() {
    let rootfs = common::rootfs_copy();
    let _unmount = common::UnmountOnDrop(rootfs.path.join("proc"));
    let host_dir = common::temp_dir();
    // The shell lists its own descriptors: those it was started with.
    let script = "mount -t proc proc /proc && ls /proc/$$/fd; umount /proc";
    let mut ch01 = ch01_run(&rootfs.path, &["sh", "-c", script]);
    common::inherit_fds_on(&mut ch01, host_dir.path());
    let transcript = Transcript::run(&mut ch01);
    assert_eq!(transcript.command_output(), "0\n1\n2\n", "{transcript}");
}

#[test]
fn only_the_variables_given_reach_the_command() {
    let env_file = common::temp_dir();
    let env_file = env_file.path().join("env");
    fs::write(&env_file, "# the greeting\nGREETING=hello from a file\nCRABBOX_PASSED_ON\n")
        .unwrap();
    let options = ["--env-file", env_file.to_str().unwrap(), "-e", "ANSWER=42"];
    let mut ch01 = ch01_run_with(&options, &common::rootfs(), &["sh", "-c", "env | sort"]);
    ch01.env("CRABBOX_SECRET", "hunter2").env("CRABBOX_PASSED_ON", "yes");
    let transcript = Transcript::run(&mut ch01);
    assert!(!transcript.command_output().contains("hunter2"), "{transcript}");
    // No UTS namespace yet: the container's hostname is the host's.
    let hostname = nix::unistd::gethostname().unwrap();
    let mut settings = common::settings();
    let hostname = format!("HOSTNAME={}\n", hostname.to_string_lossy());
    settings.add_filter(&common::regex_escape(&hostname), "HOSTNAME=[HOST]\n");
    let _s = settings.bind_to_scope();
    assert_snapshot!("environment", transcript);
}

#[test]
fn the_command_is_found_on_the_containers_path_not_the_runtimes() {
    let mut ch01 = ch01_run(&common::rootfs(), &["ls", "/"]);
    ch01.env("PATH", "/nowhere");
    let transcript = Transcript::run(&mut ch01);
    assert_eq!(transcript.status, 0, "{transcript}");
    let mut ch01 = ch01_run_with(&["-e", "PATH=/nowhere"], &common::rootfs(), &["ls", "/"]);
    let transcript = Transcript::run(&mut ch01);
    assert_eq!(transcript.status, 127, "{transcript}");
}

#[test]
fn a_malformed_variable_fails_with_125() {
    let transcript =
        Transcript::run(&mut ch01_run_with(&["-e", "=x"], &common::rootfs(), &["true"]));
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(transcript.output.contains("not a variable name"), "{transcript}");
}

#[test]
fn the_hosts_root_is_refused_as_a_rootfs() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch01_run(Path::new("/"), &["true"]));
    assert_eq!(transcript.status, 125);
    assert_snapshot!("host_root_refused", transcript);
}

#[test]
fn the_command_dies_with_a_killed_runtime() {
    let running = common::Running::spawn(&mut ch01_run(&common::rootfs(), &["sleep", "60"]));
    let command = running.container_pid();
    // SIGKILL: the runtime gets no chance to do anything about its child.
    running.signal(nix::sys::signal::Signal::SIGKILL);
    common::wait_until_gone("the command to die with its runtime", command);
}
