//! Chapter 4 checks, on cgroup v1 and v2 hosts alike: limits hold from the first
//! instruction, a fork bomb stops at pids.max, a memory hog is OOM-killed and reported, CPU
//! time is throttled, and no cgroup is left once the container has ended, however it ended.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use std::time::Duration;

use common::{Running, Transcript};
use insta::assert_snapshot;

fn ch04_run<S: AsRef<OsStr>>(options: &[&str], rootfs: &Path, command: &[S]) -> Command {
    let mut ch04 = common::command("ch04");
    ch04.arg("run").args(["--hostname", "box"]).args(options).arg(rootfs).arg("--").args(command);
    ch04
}

fn assert_cgroup_removed(transcript: &Transcript) {
    let id = common::announced_id(&transcript.output);
    let left = common::cgroup_dirs_named(&id);
    assert!(left.is_empty(), "the container's cgroup is still there: {left:?}");
}

#[test]
fn the_commands_first_instruction_sees_its_limits() {
    let _s = common::settings().bind_to_scope();
    let files: &[&str] = match common::cgroup_version() {
        "v2" => &["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/cpu.max"],
        _ => &[
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        ],
    };
    let options = ["--memory", "64m", "--pids-limit", "20", "--cpus", "0.5"];
    let mut ch04 = ch04_run(&options, &common::rootfs(), &[&["cat"], files].concat());
    let transcript = Transcript::run(&mut ch04);
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_snapshot!(format!("limits_{}", common::cgroup_version()), transcript);
}

#[test]
fn the_container_sees_its_cgroup_as_the_root() {
    let mut ch04 = ch04_run(&["--memory", "64m"], &common::rootfs(), &["cat", "/proc/self/cgroup"]);
    let transcript = Transcript::run(&mut ch04);
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.command_output().lines().all(|line| line.ends_with(":/")), "{transcript}");
}

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    let _s = common::settings().bind_to_scope();
    // The shell and nine sleeps fill ten slots; the tenth fork fails.
    let script = "for i in $(seq 1 30); do sleep 1000 & echo $i; done";
    let mut ch04 = ch04_run(&["--pids-limit", "10"], &common::rootfs(), &["sh", "-c", script]);
    let transcript = Transcript::run(&mut ch04);
    assert!(transcript.output.contains("can't fork"), "{transcript}");
    assert_cgroup_removed(&transcript);
    assert_snapshot!("fork_bomb", transcript);
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported() {
    let _s = common::settings().bind_to_scope();
    let mut options = vec!["--memory", "32m"];
    if common::host_has_swap() {
        options.extend(["--memory-swap", "32m"]);
    }
    // dd's 64 MiB block is one buffer that it fills: twice the limit.
    let hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
    let transcript = Transcript::run(&mut ch04_run(&options, &common::rootfs(), &hog));
    assert_eq!(transcript.status, 128 + 9, "{transcript}");
    assert!(transcript.output.contains("killed: out of memory, limit 32 MiB"), "{transcript}");
    assert_cgroup_removed(&transcript);
    if !common::host_has_swap() {
        assert_snapshot!("oom", transcript);
    }
}

#[test]
fn cpu_time_is_throttled_to_the_quota() {
    // A busy loop for one second, with a fifth of a CPU: the scheduler throttles it in
    // most 100 ms periods. `--init`, because busybox timeout makes the loop PID 1.
    let spin = ["timeout", "1", "sh", "-c", "while :; do :; done"];
    let options = ["--init", "--stats", "--cpus", "0.2"];
    let transcript = Transcript::run(&mut ch04_run(&options, &common::rootfs(), &spin));
    let throttled: u64 = transcript
        .output
        .split("throttled ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no throttling in --stats: {transcript}"));
    assert!(throttled > 0, "{transcript}");
}

#[test]
fn nothing_is_left_after_a_normal_exit_or_a_kill() {
    let rootfs = common::rootfs();
    // The command ends, leaving a background process; the kernel kills it with PID 1.
    let leaves_a_child = ["sh", "-c", "sleep 1000 & exit 3"];
    let transcript =
        Transcript::run(&mut ch04_run(&["--pids-limit", "5"], &rootfs, &leaves_a_child));
    assert_eq!(transcript.status, 3);
    assert_cgroup_removed(&transcript);
    let with_init = ch04_run(&["--init", "--memory", "64m"], &rootfs, &leaves_a_child);
    assert_cgroup_removed(&Transcript::run(&mut { with_init }));
    let killed = ["sh", "-c", "kill -KILL $$"];
    let transcript = Transcript::run(&mut ch04_run(&["--init"], &rootfs, &killed));
    assert_eq!(transcript.status, 137);
    assert_cgroup_removed(&transcript);
}

#[test]
fn a_bad_limit_fails_before_anything_is_created() {
    let _s = common::settings().bind_to_scope();
    let rootfs = common::rootfs();
    let transcript = Transcript::run(&mut ch04_run(&["--memory", "12x"], &rootfs, &["true"]));
    assert_eq!(transcript.status, 2);
    assert_snapshot!("bad_memory", transcript);
    let transcript = Transcript::run(&mut ch04_run(&["--memory-swap", "64m"], &rootfs, &["true"]));
    assert_eq!(transcript.status, 125);
    assert!(!transcript.output.contains("container"), "a container was created: {transcript}");
    assert_snapshot!("swap_without_memory", transcript);
    let transcript = Transcript::run(&mut ch04_run(&["--cpus", "0"], &rootfs, &["true"]));
    assert_eq!(transcript.status, 2, "{transcript}");
    let transcript = Transcript::run(&mut ch04_run(&["--memory", "0"], &rootfs, &["true"]));
    assert_eq!(transcript.status, 2, "{transcript}");
    // 1000k is less than 1m, which is 1024k.
    let options = ["--memory", "1m", "--memory-swap", "1000k"];
    let transcript = Transcript::run(&mut ch04_run(&options, &rootfs, &["true"]));
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(!transcript.output.contains("container"), "a container was created: {transcript}");
}

#[test]
fn processes_left_in_the_cgroup_are_killed_and_the_cgroup_removed() {
    let script = "echo ready; read _; exit 0";
    let mut ch04 = ch04_run(&["--pids-limit", "20"], &common::rootfs(), &["sh", "-c", script]);
    let mut running = Running::spawn(&mut ch04);
    running.wait_for_line("ready");
    let cgroups = common::crabbox_cgroups_of(running.container_pid());
    assert!(!cgroups.is_empty(), "the container is in no crabbox cgroup");
    // A host process moved into the container's cgroup stands for one the container left
    // behind that did not die with PID 1 (on v1, it is in the freezer's cgroup too).
    let mut stray = Command::new("sleep").arg("1000").spawn().unwrap();
    for cgroup in &cgroups {
        std::fs::write(cgroup.join("cgroup.procs"), stray.id().to_string()).unwrap();
    }
    drop(running.child.stdin.take());
    assert_eq!(running.wait_for_exit(), Some(0));
    let mut ended = None;
    common::poll_until("the stray process to be killed", Duration::from_secs(10), || {
        ended = stray.try_wait().unwrap();
        ended.is_some()
    });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ended.unwrap().signal(), Some(9), "the stray was not killed by SIGKILL");
    assert!(cgroups.iter().all(|cgroup| !cgroup.exists()), "left behind: {cgroups:?}");
}

/// Starts a container, SIGKILLs its runtime, and waits until the container has died with
/// it. Returns the container's id. The runtime could not remove its cgroups; any start
/// from now on may (the checks run in parallel).
fn container_of_a_killed_runtime() -> String {
    let script = "echo ready; sleep 60";
    let mut running = Running::spawn(&mut ch04_run(&[], &common::rootfs(), &["sh", "-c", script]));
    running.wait_for_line("ready");
    let container = running.container_pid();
    let cgroups = common::crabbox_cgroups_of(container);
    let id = cgroups[0].file_name().unwrap().to_string_lossy().into_owned();
    running.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(running.wait_for_exit(), None, "the runtime was killed");
    common::wait_until_gone("the container to die with its runtime", container);
    id
}

fn assert_nothing_left_of(id: &str) {
    let left = common::cgroup_dirs_named(id);
    assert!(left.is_empty(), "the cgroups of {id} are still there: {left:?}");
    let lock = Path::new("/run/crabbox/containers").join(format!("{id}.lock"));
    assert!(!lock.exists(), "{} is still there", lock.display());
}

#[test]
fn a_killed_runtimes_container_dies_with_it_and_the_next_start_removes_its_cgroups() {
    let id = container_of_a_killed_runtime();
    let next = Transcript::run(&mut ch04_run(&[], &common::rootfs(), &["true"]));
    assert_eq!(next.status, 0, "{next}");
    assert_nothing_left_of(&id);
}

#[test]
fn cleanup_kills_and_removes_what_a_killed_runtime_left() {
    let id = container_of_a_killed_runtime();
    let transcript = Transcript::run(common::command("ch04").arg("cleanup"));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.output.contains("removed the cgroups of"), "{transcript}");
    assert_nothing_left_of(&id);

    // A process still in a dead runtime's cgroup, one that escaped the end of its PID
    // namespace, say: a host process stands for it, in every hierarchy the host has.
    let (id, mut stray) = plant_a_stale_cgroup_with_a_process();
    let transcript = Transcript::run(common::command("ch04").arg("cleanup"));
    assert_eq!(transcript.status, 0, "{transcript}");
    let mut ended = None;
    common::poll_until("the stray process to be killed", Duration::from_secs(10), || {
        ended = stray.try_wait().unwrap();
        ended.is_some()
    });
    assert_nothing_left_of(&id);
}

/// Makes the cgroup `crabbox/<id>` of a runtime that is gone, with a host process in it.
/// The runtime's lock is held while it is made, as a runtime holds it, so no start of
/// another check reclaims it half-made.
fn plant_a_stale_cgroup_with_a_process() -> (String, std::process::Child) {
    use nix::fcntl::{Flock, FlockArg};
    let id = format!("{:012x}", std::process::id() as u64 * 7919);
    std::fs::create_dir_all("/run/crabbox/containers").unwrap();
    let lock_file = std::fs::File::create(format!("/run/crabbox/containers/{id}.lock")).unwrap();
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();
    let stray = Command::new("sleep").arg("1000").spawn().unwrap();
    let hierarchies = match common::cgroup_version() {
        "v2" => vec![Path::new("/sys/fs/cgroup").to_path_buf()],
        _ => {
            let controllers = ["memory", "cpu", "cpuacct", "pids", "freezer"];
            let mut hierarchies: Vec<_> = controllers
                .iter()
                .filter_map(|name| Path::new("/sys/fs/cgroup").join(name).canonicalize().ok())
                .collect();
            // cpu and cpuacct are one hierarchy on most hosts, behind two links.
            hierarchies.sort();
            hierarchies.dedup();
            hierarchies
        }
    };
    for hierarchy in hierarchies {
        let dir = hierarchy.join("crabbox").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), stray.id().to_string()).unwrap();
    }
    (id, stray)
}

#[test]
fn a_memory_limit_the_kernel_cannot_hold_is_refused_and_one_above_the_hosts_memory_warned_of() {
    let _s = common::settings().bind_to_scope();
    let rootfs = common::rootfs();
    let huge = ["--memory", "9999999999g"];
    let transcript = Transcript::run(&mut ch04_run(&huge, &rootfs, &["true"]));
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(!transcript.output.contains("container"), "a container was created: {transcript}");
    assert_snapshot!("memory_beyond_the_kernel", transcript);
    let more_than_any_host = ["--memory", "99999999g"];
    let transcript = Transcript::run(&mut ch04_run(&more_than_any_host, &rootfs, &["true"]));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.output.contains("it will never be reached"), "{transcript}");
}
