//! The harness shared by the chapter tests: the chapter binaries, the busybox rootfs, shell-like
//! transcripts for snapshots, the redactions, and the chroot escape check.
//!
//! Each `tests/chNN_*.rs` includes this module and uses the part it needs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A chapter binary (`ch01`, …), where `cargo xtask` says it built it.
pub fn bin(name: &str) -> PathBuf {
    built_binary(name, false)
}

/// A binary that `cargo xtask` builds statically for the host triple (`ch01-escape`), so it
/// runs inside a rootfs without a C library.
pub fn static_bin(name: &str) -> PathBuf {
    built_binary(name, true)
}

/// The binary `name` from the variable `cargo xtask` sets for each binary it built (cargo's
/// target directory may be anywhere: CARGO_TARGET_DIR).
fn built_binary(name: &str, statically_linked: bool) -> PathBuf {
    let var = xtask::binary_var(name, statically_linked);
    let path = std::env::var_os(&var).map(PathBuf::from);
    let path = path.filter(|path| path.is_file()).unwrap_or_else(|| {
        panic!("binary `{name}` not built (no {var}); run the checks with `cargo xtask check-chapter N`")
    });
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

/// Chapter 6's test images, made from the busybox rootfs by umoci and skopeo (see
/// `xtask::images`: which images, and the reference of each).
pub fn test_images() -> xtask::images::TestImages {
    xtask::images::ensure_test_images().expect("make the test images")
}

/// A private copy of the busybox rootfs in a temporary directory, removed on drop.
pub struct RootfsCopy {
    pub path: PathBuf,
    _dir: TempDir,
}

/// A check that fails, or a wrong answer under the guarantee, may leave a mount on the copy
/// in the check's own mount namespace (one whose mounts are shared: see
/// [`share_every_mount_of_this_check`]); the directory cannot go while it is there. So the
/// mounts below it go first, deepest first.
impl Drop for RootfsCopy {
    fn drop(&mut self) {
        let mut targets: Vec<PathBuf> = mounts_of_this_check()
            .lines()
            .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
            .filter(|target| target.starts_with(&self.path))
            .collect();
        targets.sort_by_key(|target| std::cmp::Reverse(target.as_os_str().len()));
        for target in targets {
            let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
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
    /// What the command wrote to stdout and stderr, in the order a terminal shows it: both
    /// are one pipe, so the kernel keeps the order of the writes (two pipes read side by
    /// side cannot tell which of two quick writes came first).
    pub output: String,
    /// The exit status, or `128 + N` when signal N ended the process (as a shell says).
    pub status: i32,
}

impl Transcript {
    /// Runs `command` with an empty stdin (as `Command::output` does) and one pipe for its
    /// stdout and stderr.
    pub fn run(command: &mut Command) -> Transcript {
        let (mut reader, writer) = std::io::pipe().expect("create a pipe");
        let writer_too = writer.try_clone().expect("duplicate the pipe");
        command.stdin(Stdio::null()).stdout(writer).stderr(writer_too);
        let mut child = command.spawn().expect("start the command");
        // The command holds the write ends until they are replaced; then only the child has
        // them, and the pipe ends when it (and what it left running) closes them.
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes).expect("read the command's output");
        let status = child.wait().expect("wait for the command");
        let status = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().expect("a process ends by exit or by signal")
        });
        let transcript = Transcript {
            command_line: xtask::process::command_line(command),
            output: String::from_utf8_lossy(&bytes).into_owned(),
            status,
        };
        remember_container_ids(&transcript.output);
        // Into the check's captured output, which a failure shows: what the runtime said,
        // such as the `todo!()` of the exercise it reached (check-chapter names that one).
        print!("{transcript}");
        transcript
    }

    /// The output without what the runtime wrote itself: what the container's command
    /// printed.
    pub fn command_output(&self) -> String {
        self.split_output().0
    }

    /// What the runtime wrote itself: its `chNN: …` lines (`ch04: container ID`), and the
    /// report of a panic (a `todo!()` reached) up to its `note:` line.
    pub fn runtime_lines(&self) -> String {
        self.split_output().1
    }

    /// (the command's lines, the runtime's lines).
    fn split_output(&self) -> (String, String) {
        let program = self.command_line.split_whitespace().next().unwrap_or_default();
        let own = format!("{program}: ");
        let (mut command, mut runtime) = (String::new(), String::new());
        let mut in_panic = false;
        for line in self.output.lines() {
            let panic_starts = line.starts_with("thread '") && line.contains(" panicked at ");
            in_panic |= panic_starts;
            if in_panic || line.starts_with(&own) {
                runtime.push_str(line);
                runtime.push('\n');
            } else {
                command.push_str(line);
                command.push('\n');
            }
            in_panic &= !line.starts_with("note: ");
        }
        (command, runtime)
    }
}

/// Shown as the book shows it, with every container id a runtime announced in this test
/// process (see [`remember_container_ids`]) as `[ID]`: an id is 12 random hex digits, which
/// may all be digits, so no pattern tells one from a number.
impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = format!("$ {}\n{}", self.command_line, self.output);
        if self.status != 0 {
            shown.push_str(&format!("[exit status: {}]\n", self.status));
        }
        for id in CONTAINER_IDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            shown = shown.replace(id.as_str(), "[ID]");
        }
        f.write_str(&shown)
    }
}

/// The container ids the runtimes announced (`chNN: container ID`), in every check of this
/// process: a transcript may name another run's container.
static CONTAINER_IDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Remembers the ids of the containers that `output` announces, so transcripts show them as
/// `[ID]`. The shape is exactly that of ch02_namespaces::hostname::new_container_id.
pub fn remember_container_ids(output: &str) {
    let ids =
        output.lines().filter_map(|line| line.split_once(": container ")).map(|(_, id)| id.trim());
    let ids = ids.filter(|id| {
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    CONTAINER_IDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .extend(ids.map(String::from));
}

/// The snapshot settings every check binds: redact only what varies between runs.
pub fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(true);
    settings.add_filter(&regex_escape(&rootfs().to_string_lossy()), "[ROOTFS]");
    let images = xtask::images::test_images_dir();
    settings.add_filter(&regex_escape(&images.to_string_lossy()), "[IMAGES]");
    settings.add_filter(r"/tmp/crabbox-test-[A-Za-z0-9]+", "[TMP]");
    settings.add_filter(r"\bpid \d+", "pid [PID]");
    // A container's id in crabbox's firewall rules; transcripts also redact every id a
    // runtime announced (see Transcript's Display).
    settings.add_filter(r"\bcrabbox:[0-9a-f]{12}\b", "crabbox:[ID]");
    settings
}

pub fn regex_escape(text: &str) -> String {
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
        transcript.command_output() == HOST_MARKER
    }
}

/// Polls `done` until it is true, failing the check after `timeout`.
pub fn poll_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of the children of `pid` (see proc(5), /proc/PID/task/TID/children).
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = fs::read_to_string(path).unwrap_or_default();
    text.split_whitespace().map(|child| child.parse().unwrap()).collect()
}

/// The state letter of `pid` (R, S, Z, …) from /proc/PID/stat, if it still exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A container runtime running in the background, with its stdout read line by line. On
/// drop it kills what it started: the container's processes first, then the runtime. A
/// runtime killed by SIGKILL cannot clean up after itself, so the drop removes the
/// container's cgroups too (what it left of a network, the next start reclaims).
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
}

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the runtime");
        // The runtime's stderr goes into the check's captured output (a thread inherits the
        // capture of the one that spawned it), which a failure shows.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                remember_container_ids(&line);
                eprintln!("{line}");
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Reads stdout until a line equal to `wanted`; returns the lines before it.
    pub fn wait_for_line(&self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == wanted => return before,
                Ok(line) => before.push(line),
                Err(_) => panic!("no line `{wanted}` from the container; got {before:?}"),
            }
        }
    }

    /// The container's first process: the runtime's child, once it has one.
    pub fn container_pid(&self) -> u32 {
        let mut children = Vec::new();
        poll_until("the runtime to start the container", Duration::from_secs(10), || {
            children = children_of(self.child.id());
            !children.is_empty()
        });
        assert_eq!(children.len(), 1, "the runtime has one child, the container");
        children[0]
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the runtime");
    }

    /// Waits (bounded) for the runtime to exit and returns its exit code. The bound is
    /// generous: under emulation (the cgroup v2 guest), with every check of a chapter
    /// running at once, a clean-up that runs iptables several times can take many seconds.
    pub fn wait_for_exit(&mut self) -> Option<i32> {
        let mut status = None;
        poll_until("the runtime to exit", Duration::from_secs(60), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap().code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if self.child.try_wait().ok().flatten().is_none() {
            let containers = children_of(self.child.id());
            let cgroups: Vec<PathBuf> =
                containers.iter().flat_map(|&pid| crabbox_cgroups_of(pid)).collect();
            for pid in containers {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            // A cgroup can be removed once its last process has exited.
            let deadline = Instant::now() + Duration::from_secs(5);
            for dir in cgroups {
                while fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// The cgroup interface the chapters drive on this host: `v2` on a unified host, `v1` on a
/// legacy or hybrid one.
pub fn cgroup_version() -> &'static str {
    let root = nix::sys::statfs::statfs("/sys/fs/cgroup").expect("statfs /sys/fs/cgroup");
    if root.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        "v2"
    } else {
        "v1"
    }
}

/// Whether the host has swap, which a memory limit alone lets a container use.
pub fn host_has_swap() -> bool {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    meminfo.lines().any(|line| line.starts_with("SwapTotal:") && !line.ends_with(" 0 kB"))
}

/// The container id a runtime announced on stderr (`chNN: container <id>`).
pub fn announced_id(stderr: &str) -> String {
    let line = stderr.lines().find_map(|line| line.split_once(": container ")).map(|(_, id)| id);
    line.expect("the runtime announces the container's id").trim().to_string()
}

/// Every directory named `name` below /sys/fs/cgroup: what a container's cgroup left.
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) || depth > 4 {
                continue;
            }
            if entry.file_name() == name {
                found.push(path.clone());
            }
            dirs.push((path, depth + 1));
        }
    }
    found
}

/// The host paths of the cgroups `pid` is in below crabbox/, from /proc/PID/cgroup.
pub fn crabbox_cgroups_of(pid: u32) -> Vec<PathBuf> {
    // A process that has gone has none.
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':').skip(1);
            let (controllers, path) = (fields.next()?, fields.next()?);
            if !path.starts_with("/crabbox/") || controllers.starts_with("name=") {
                return None;
            }
            let hierarchy = Path::new("/sys/fs/cgroup").join(controllers);
            Some(hierarchy.join(path.trim_start_matches('/')))
        })
        .collect()
}

/// The descriptors [`inherit_fds_on`] leaves open in the runtime: a low one, the one of the
/// issue's shell (`exec 7</tmp`), and two high ones a terminal or an IDE may hold.
pub const INHERITED_FDS: [i32; 4] = [3, 7, 251, 1000];

/// Makes `command` start with each of [`INHERITED_FDS`] open on the host directory `dir`,
/// not close-on-exec, as a shell's `exec 7</tmp` leaves them for the programs it starts.
pub fn inherit_fds_on(command: &mut Command, dir: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = fs::File::open(dir).expect("open the host directory");
    // SAFETY: the closure only calls dup2(2) and fcntl(2), which are async-signal-safe,
    // between fork and exec; `dir` lives in the closure as long as the command does.
    unsafe {
        command.pre_exec(move || {
            let open = dir.as_raw_fd();
            for fd in INHERITED_FDS {
                // dup2 onto itself would keep the close-on-exec flag that std sets.
                match fd == open {
                    true => nix::libc::fcntl(fd, nix::libc::F_SETFD, 0),
                    false => nix::libc::dup2(open, fd),
                };
            }
            Ok(())
        });
    }
}

/// Polls, bounded, until process `pid` has gone (a zombie counts as gone: it runs nothing).
pub fn wait_until_gone(what: &str, pid: u32) {
    poll_until(what, Duration::from_secs(10), || matches!(process_state(pid), None | Some('Z')));
}

// What the checks need to create the conditions a wrong answer fails under (issue 10).

/// Moves the calling check (its test thread) into new namespaces of the kinds in `flags`:
/// what a wrong runtime does to the hostname or the mount table then lands in them, never
/// on the host, and the check sees it there. Runtimes it starts afterwards inherit them. A
/// thread may unshare its UTS and mount namespaces alone; see unshare(2).
pub fn isolate_this_check(flags: nix::sched::CloneFlags) {
    nix::sched::unshare(flags).expect("unshare the check's own namespaces");
}

/// The mount table of the calling thread's mount namespace (/proc/self is the main
/// thread's, which a check that isolated itself has left).
pub fn mounts_of_this_check() -> String {
    fs::read_to_string("/proc/thread-self/mountinfo").expect("read /proc/thread-self/mountinfo")
}

/// Gives the calling check a mount namespace of its own in which every mount is shared, as
/// systemd makes the host's (mount_namespaces(7), "Shared subtrees"), in peer groups of its
/// own: a runtime that does not make its mounts private propagates them into this one,
/// which [`mounts_of_this_check`] shows, and never into the host's.
pub fn share_every_mount_of_this_check() {
    use nix::mount::{mount, MsFlags};
    isolate_this_check(nix::sched::CloneFlags::CLONE_NEWNS);
    let none = None::<&str>;
    // Private first: a copy of a shared mount is a peer of the host's until cut off.
    for propagation in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
        mount(none, "/", none, MsFlags::MS_REC | propagation, none)
            .expect("change the propagation of the check's mounts");
    }
}
