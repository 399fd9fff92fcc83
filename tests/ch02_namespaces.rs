//! Chapter 2 checks: the container has its own PID, UTS and IPC namespaces, and a PID 1
//! that does its duties when asked to (`--init`).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Running, Transcript};
use insta::assert_snapshot;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

/// A `ch02 run` command. The check moves into a UTS namespace of its own first, so a runtime
/// that sets the hostname outside the container's renames that one, not the host.
fn ch02_run<S: AsRef<OsStr>>(options: &[&str], rootfs: &Path, command: &[S]) -> Command {
    common::isolate_this_check(CloneFlags::CLONE_NEWUTS);
    let mut ch02 = common::command("ch02");
    ch02.arg("run").args(options).arg(rootfs).arg("--").args(command);
    ch02
}

/// The hostname of the UTS namespace the runtime starts in: the host's, or the check's own.
fn hostname_of_host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

#[test]
fn hostname_inside_is_the_one_asked_for() {
    let _s = common::settings().bind_to_scope();
    let host_before = hostname_of_host();
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["hostname"]);
    let transcript = Transcript::run(&mut ch02);
    assert_eq!(transcript.command_output(), "box\n");
    assert_eq!(hostname_of_host(), host_before, "the host's hostname changed");
    assert_snapshot!("hostname", transcript);
}

#[test]
fn hostname_defaults_to_a_new_container_id() {
    let _s = common::settings().bind_to_scope();
    let transcript = Transcript::run(&mut ch02_run(&[], &common::rootfs(), &["hostname"]));
    let id = transcript.command_output().trim().to_string();
    assert_eq!(transcript.runtime_lines(), format!("ch02: container {id}\n"));
    assert!(id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()), "{transcript}");
    assert_snapshot!("hostname_default", transcript);
}

#[test]
fn a_bad_hostname_fails_before_anything_runs() {
    let _s = common::settings().bind_to_scope();
    let mut ch02 = ch02_run(&["--hostname", "my box"], &common::rootfs(), &["true"]);
    let transcript = Transcript::run(&mut ch02);
    assert_eq!(transcript.status, 125);
    assert_snapshot!("bad_hostname", transcript);
}

#[test]
fn the_command_is_pid_1() {
    let _s = common::settings().bind_to_scope();
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["sh", "-c", "echo $$"]);
    let transcript = Transcript::run(&mut ch02);
    assert_eq!(transcript.command_output(), "1\n");
    assert_snapshot!("pid_1", transcript);
}

#[test]
fn a_command_that_cannot_start_exits_127() {
    // The command never replaces the child: the status is the one the child returns.
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["crabbox-nothing"]);
    assert_eq!(Transcript::run(&mut ch02).status, 127);
}

#[test]
fn exit_status_is_the_commands() {
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["sh", "-c", "exit 3"]);
    assert_eq!(Transcript::run(&mut ch02).status, 3);
}

#[test]
fn pid_1_ignores_sigterm_it_has_no_handler_for() {
    let _s = common::settings().bind_to_scope();
    let script = "kill -TERM $$; echo survived SIGTERM";
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["sh", "-c", script]);
    let transcript = Transcript::run(&mut ch02);
    assert_eq!(
        (transcript.command_output().as_str(), transcript.status),
        ("survived SIGTERM\n", 0)
    );
    assert_snapshot!("pid_1_ignores_sigterm", transcript);
}

#[test]
fn with_init_the_command_is_pid_2_and_sigterm_stops_it() {
    let _s = common::settings().bind_to_scope();
    let script = "echo $$; kill -TERM $$; echo survived SIGTERM";
    let options = ["--hostname", "box", "--init"];
    let transcript =
        Transcript::run(&mut ch02_run(&options, &common::rootfs(), &["sh", "-c", script]));
    assert_eq!((transcript.command_output().as_str(), transcript.status), ("2\n", 128 + 15));
    assert_snapshot!("init_sigterm", transcript);
}

#[test]
fn signals_sent_to_ch02_reach_the_container() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let script = "echo ready; exec sleep 1000";
        let options = ["--hostname", "box", "--init"];
        let mut running =
            Running::spawn(&mut ch02_run(&options, &common::rootfs(), &["sh", "-c", script]));
        running.wait_for_line("ready");
        running.signal(signal);
        // ch02 exits normally, with the status of the command that the signal ended.
        assert_eq!(running.wait_for_exit(), Some(128 + signal as i32), "{signal}");
    }
}

#[test]
fn a_pid_1_with_a_handler_gets_the_signal() {
    let script = "trap 'echo got SIGTERM; exit 7' TERM; echo ready; while :; do sleep 1; done";
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["sh", "-c", script]);
    let mut running = Running::spawn(&mut ch02);
    running.wait_for_line("ready");
    running.signal(Signal::SIGTERM);
    running.wait_for_line("got SIGTERM");
    assert_eq!(running.wait_for_exit(), Some(7));
}

#[test]
fn without_init_orphans_become_zombies_of_pid_1() {
    let mut ch02 = ch02_run(&["--hostname", "box"], &common::rootfs(), &["sleep", "1000"]);
    let running = Running::spawn(&mut ch02);
    let pid_1 = running.container_pid();
    common::poll_until("PID 1 to be sleep", Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{pid_1}/comm")).is_ok_and(|comm| comm == "sleep\n")
    });
    // A shell entered into the container's PID namespace starts three children and ends
    // before them: the kernel re-parents them to PID 1, `sleep`, which never waits for them.
    let target = pid_1.to_string();
    let orphans = Command::new("nsenter")
        .args(["--target", &target, "--pid", "--", "/bin/sh", "-c", "true & true & true &"])
        .status()
        .expect("run nsenter (util-linux)");
    assert!(orphans.success());
    common::poll_until("three zombie children of PID 1", Duration::from_secs(10), || {
        let children = common::children_of(pid_1);
        children.len() == 3 && children.iter().all(|&pid| common::process_state(pid) == Some('Z'))
    });
}

/// Makes three orphans: each `sh -c 'sleep 1000 &'` ends before its `sleep` does, so the
/// kernel re-parents the `sleep`s to PID 1. Then the command says `ready` and becomes a sleep
/// of its own.
const MAKE_ORPHANS: &str =
    "for i in 1 2 3; do sh -c 'sleep 1000 &'; done; echo ready; exec sleep 2000";

#[test]
fn init_reaps_zombies() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    // The shell gives background jobs /dev/null as stdin; this chapter's /dev is empty.
    let rootfs = common::rootfs_copy();
    let dev_null = rootfs.path.join("dev/null");
    let (kind, mode) = (nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits(0o666));
    nix::sys::stat::mknod(&dev_null, kind, mode.unwrap(), nix::sys::stat::makedev(1, 3)).unwrap();
    let options = ["--hostname", "box", "--init"];
    let mut ch02 = ch02_run(&options, &rootfs.path, &["sh", "-c", MAKE_ORPHANS]);
    let mut running = Running::spawn(&mut ch02);
    running.wait_for_line("ready");
    let init = running.container_pid();
    let is_orphan = |pid: &u32| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline == b"sleep\x001000\x00")
    };
    let mut orphans = Vec::new();
    common::poll_until("three orphans re-parented to the init", Duration::from_secs(10), || {
        orphans = common::children_of(init).into_iter().filter(is_orphan).collect();
        orphans.len() == 3
    });
    // The orphans end while the init is stopped, so their three SIGCHLDs arrive as one (a
    // standard signal is pending or not; see signal(7)): the init must reap in a loop.
    kill(Pid::from_raw(init as i32), Signal::SIGSTOP).unwrap();
    for &orphan in &orphans {
        kill(Pid::from_raw(orphan as i32), Signal::SIGKILL).unwrap();
    }
    common::poll_until("the orphans to end", Duration::from_secs(10), || {
        orphans.iter().all(|&pid| common::process_state(pid) == Some('Z'))
    });
    kill(Pid::from_raw(init as i32), Signal::SIGCONT).unwrap();
    // Once it runs again, it reaps them, and only the command is left.
    common::poll_until("the init to reap the orphans", Duration::from_secs(10), || {
        common::children_of(init).len() == 1
    });
    running.signal(Signal::SIGTERM);
    assert_eq!(running.wait_for_exit(), Some(128 + 15));
}

#[test]
fn ipc_objects_are_private_to_each_container() {
    let _s = common::settings().bind_to_scope();
    let rootfs = common::rootfs_copy();
    let msgq = common::static_bin("ch02-msgq");
    fs::copy(&msgq, rootfs.path.join("bin/ch02-msgq")).unwrap();
    let (host_key, key_of_a) = ("0x63627801", "0x63627802");
    assert!(Command::new(&msgq).args(["create", host_key]).status().unwrap().success());
    let _remove = RemoveQueueOnDrop(msgq.clone(), host_key);

    // Container A makes a queue and keeps its namespace alive until its stdin closes.
    let script = format!(
        "ch02-msgq create {key_of_a}; ch02-msgq show {host_key}; echo ready; read _; exit 0"
    );
    let mut a =
        Running::spawn(&mut ch02_run(&["--hostname", "a"], &rootfs.path, &["sh", "-c", &script]));
    let seen_by_a = a.wait_for_line("ready");
    assert_eq!(seen_by_a[1], format!("queue {host_key}: none"), "A sees the host's queue");

    let script = format!("ch02-msgq show {key_of_a}; ch02-msgq show {host_key}");
    let mut ch02 = ch02_run(&["--hostname", "b"], &rootfs.path, &["sh", "-c", &script]);
    let b = Transcript::run(&mut ch02);
    let on_host = Command::new(&msgq).args(["show", key_of_a]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&on_host.stdout), format!("queue {key_of_a}: none\n"));

    drop(a.child.stdin.take());
    assert_eq!(a.wait_for_exit(), Some(0));
    assert_snapshot!("ipc_private", b);
}

struct RemoveQueueOnDrop(std::path::PathBuf, &'static str);

impl Drop for RemoveQueueOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(&self.0).args(["remove", self.1]).output();
    }
}

#[test]
fn ps_shows_the_hosts_processes_while_proc_is_the_hosts() {
    // A new PID namespace changes the numbers a process sees for itself, not what a /proc
    // mounted in another PID namespace shows: here the host's, bound into the rootfs.
    let rootfs = common::rootfs_copy();
    let proc_inside = rootfs.path.join("proc");
    let _unmount = common::UnmountOnDrop(proc_inside.clone());
    let flags = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some("/proc"), &proc_inside, None::<&str>, flags, None::<&str>).unwrap();
    let script = "echo I am $$; ps -o pid";
    let transcript =
        Transcript::run(&mut ch02_run(&["--hostname", "box"], &rootfs.path, &["sh", "-c", script]));
    let this_test = std::process::id().to_string();
    assert!(transcript.command_output().starts_with("I am 1\n"), "{transcript}");
    assert!(transcript.command_output().lines().any(|pid| pid.trim() == this_test), "{transcript}");
}

#[test]
fn root_can_still_walk_out_of_the_chroot() {
    let escape = common::EscapeCheck::new();
    let mut ch02 = ch02_run(&["--hostname", "box"], &escape.rootfs.path, &escape.command());
    let transcript = Transcript::run(&mut ch02);
    assert!(escape.reached_host(&transcript), "the escape did not reach the host: {transcript}");
}
