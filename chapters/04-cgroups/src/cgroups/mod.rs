//! The container's cgroup, on either version of the interface. The layout is detected once,
//! then every operation dispatches on [`Cgroup`]: the same steps, two file layouts.
//!
//! ```text
//! v2 (unified): one tree, every controller    v1 (legacy): one tree per controller
//! /sys/fs/cgroup/                             /sys/fs/cgroup/memory/crabbox/<id>/memory.limit_in_bytes
//! └── crabbox/                                /sys/fs/cgroup/cpu/crabbox/<id>/cpu.cfs_quota_us
//!     └── <id>/ memory.max cpu.max pids.max   /sys/fs/cgroup/pids/crabbox/<id>/pids.max
//! ```

pub mod v1;
pub mod v2;

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
use nix::unistd::Pid;

use ch03_pivot_root::filesystems::NO_EXEC_SUID_DEV;

use crate::limits::Limits;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How the host mounts cgroups. Hybrid hosts (v1 controllers, plus an empty cgroup2 at
/// /sys/fs/cgroup/unified) are driven through v1, as runc does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupSetup {
    Unified,
    Hybrid,
    Legacy,
}

// ANCHOR: detect_setup
/// Finds the host's cgroup layout from the filesystem types at /sys/fs/cgroup (statfs(2)).
pub fn detect_setup() -> Result<CgroupSetup> {
    let root = statfs(CGROUP_ROOT).with_context(|| format!("statfs {CGROUP_ROOT}"))?;
    if root.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupSetup::Unified);
    }
    if root.filesystem_type() != TMPFS_MAGIC {
        bail!("{CGROUP_ROOT} holds neither cgroup v2 nor v1 hierarchies; run `cargo xtask doctor`");
    }
    let unified = statfs("/sys/fs/cgroup/unified");
    match unified {
        Ok(fs) if fs.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(CgroupSetup::Hybrid),
        _ => Ok(CgroupSetup::Legacy),
    }
}
// ANCHOR_END: detect_setup

/// The controllers a set of limits needs: a limit without its controller is an error, not
/// a limit silently not applied.
pub fn needed_controllers(limits: &Limits) -> Vec<&'static str> {
    let mut needed = Vec::new();
    if limits.memory.is_some() {
        needed.push("memory");
    }
    if limits.cpu.is_some() || limits.cpu_weight.is_some() {
        needed.push("cpu");
    }
    if limits.pids.is_some() {
        needed.push("pids");
    }
    needed
}

/// Resource use, read when the container has ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub peak_memory: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub throttled: Option<u64>,
}

/// The container's cgroup `crabbox/<id>`, in whichever version the host has.
#[derive(Debug)]
pub enum Cgroup {
    V1(v1::Cgroup),
    V2(v2::Cgroup),
}

impl Cgroup {
    /// Creates `crabbox/<id>` under /sys/fs/cgroup and writes `limits` into it.
    pub fn create(setup: CgroupSetup, id: &str, limits: &Limits) -> Result<Cgroup> {
        let root = Path::new(CGROUP_ROOT);
        let needed = needed_controllers(limits);
        let cgroup = match setup {
            CgroupSetup::Unified => Cgroup::V2(v2::Cgroup::create(root, id, &needed)?),
            CgroupSetup::Hybrid | CgroupSetup::Legacy => {
                Cgroup::V1(v1::Cgroup::create(root, id, &needed)?)
            }
        };
        if let Err(err) = cgroup.apply(limits) {
            return Err(match cgroup.remove() {
                Ok(()) => err,
                Err(cleanup) => err.context(format!("and removing the cgroup failed: {cleanup:#}")),
            });
        }
        Ok(cgroup)
    }

    /// The cgroup `crabbox/<id>` that an earlier runtime made, in whichever hierarchies it
    /// is still there.
    pub fn existing(setup: CgroupSetup, id: &str) -> Result<Cgroup> {
        let root = Path::new(CGROUP_ROOT);
        Ok(match setup {
            CgroupSetup::Unified => Cgroup::V2(v2::Cgroup::existing(root, id)),
            CgroupSetup::Hybrid | CgroupSetup::Legacy => {
                Cgroup::V1(v1::Cgroup::existing(root, id)?)
            }
        })
    }

    pub fn apply(&self, limits: &Limits) -> Result<()> {
        match self {
            Cgroup::V1(cgroup) => cgroup.apply(limits),
            Cgroup::V2(cgroup) => cgroup.apply(limits),
        }
    }

    pub fn add_pid(&self, pid: Pid) -> Result<()> {
        match self {
            Cgroup::V1(cgroup) => cgroup.add_pid(pid),
            Cgroup::V2(cgroup) => cgroup.add_pid(pid),
        }
    }

    /// How many processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> Result<u64> {
        match self {
            Cgroup::V1(cgroup) => cgroup.oom_kills(),
            Cgroup::V2(cgroup) => cgroup.oom_kills(),
        }
    }

    pub fn stats(&self) -> Result<Stats> {
        match self {
            Cgroup::V1(cgroup) => cgroup.stats(),
            Cgroup::V2(cgroup) => cgroup.stats(),
        }
    }

    /// Kills whatever is left in the cgroup and removes it.
    pub fn remove(&self) -> Result<()> {
        match self {
            Cgroup::V1(cgroup) => cgroup.remove(),
            Cgroup::V2(cgroup) => cgroup.remove(),
        }
    }
}

/// A cgroup is removed even when the runtime panics (an exercise's `todo!()`, or a bug):
/// unwinding runs this. The runtime calls [`Cgroup::remove`] itself first, to report
/// errors; removing twice is harmless.
impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// The ids of the containers that have a cgroup `crabbox/<id>` on this host.
pub fn container_ids(setup: CgroupSetup) -> Result<Vec<String>> {
    let root = Path::new(CGROUP_ROOT);
    match setup {
        CgroupSetup::Unified => v2::container_ids(root),
        CgroupSetup::Hybrid | CgroupSetup::Legacy => v1::container_ids(root),
    }
}

/// The names of the directories in `dir`; none when `dir` does not exist.
fn subdirectory_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries.with_context(|| format!("list {}", dir.display()))?,
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// Writes `value` to the control file `name` in `dir`. Control files exist or do not; a
/// missing one means the kernel lacks that feature, which the error says.
pub fn write_value(dir: &Path, name: &str, value: &str) -> Result<()> {
    let path = dir.join(name);
    let mut file = OpenOptions::new().write(true).open(&path).map_err(|err| match err.kind() {
        ErrorKind::NotFound => {
            anyhow::anyhow!("{} does not exist: this kernel lacks it", path.display())
        }
        _ => anyhow::Error::new(err).context(format!("open {}", path.display())),
    })?;
    file.write_all(value.as_bytes()).with_context(|| format!("write {value} to {}", path.display()))
}

pub fn read_value(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// The number after `key` in a flat-keyed file such as memory.events (`oom_kill 1`).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Creates `dir`; an existing one means another container has this id.
pub fn create_cgroup_dir(dir: &Path) -> Result<()> {
    fs::create_dir(dir).with_context(|| format!("create cgroup {}", dir.display()))
}

// ANCHOR: remove_cgroup_dir
/// Removes an emptied cgroup. A cgroup whose last process has just exited can still be
/// busy for a moment (EBUSY), so this retries, within a bound.
pub fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err)
                if err.raw_os_error() == Some(Errno::EBUSY as i32) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("remove cgroup {}", dir.display()))
            }
        }
    }
}
// ANCHOR_END: remove_cgroup_dir

/// Polls `done` every 10 ms for at most 5 s; the kernel finishes killing and freezing
/// asynchronously.
pub fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done()? {
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

// ANCHOR: enter_cgroup_namespace
/// In the child, once it is in its cgroup: a new cgroup namespace, whose root is that
/// cgroup. See cgroup_namespaces(7): the root is the caller's cgroup *at the time of
/// unshare*, which is why this waits for the parent instead of going into clone's flags.
pub fn enter_cgroup_namespace() -> Result<()> {
    // EXERCISE 4.4: move this process into a new cgroup namespace (unshare(2) with CLONE_NEWCGROUP)
    unshare(CloneFlags::CLONE_NEWCGROUP).context("create a cgroup namespace")
    // END EXERCISE
}
// ANCHOR_END: enter_cgroup_namespace

const READ_ONLY: MsFlags =
    MsFlags::MS_RDONLY.union(MsFlags::MS_NOSUID).union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// Mounts the container's view of its cgroups, read-only, at /sys/fs/cgroup; run after
/// pivot_root, in the cgroup namespace, with /proc mounted.
pub fn mount_cgroupfs(setup: CgroupSetup) -> Result<()> {
    let target = Path::new(CGROUP_ROOT);
    if setup == CgroupSetup::Unified {
        return mount(Some("cgroup2"), target, Some("cgroup2"), READ_ONLY, None::<&str>)
            .context("mount cgroup2 on /sys/fs/cgroup");
    }
    mount(Some("tmpfs"), target, Some("tmpfs"), NO_EXEC_SUID_DEV, Some("mode=755"))
        .context("mount a tmpfs on /sys/fs/cgroup")?;
    for controllers in v1::mounted_hierarchies()? {
        mount_v1_hierarchy(target, &controllers)?;
    }
    let remount = READ_ONLY | MsFlags::MS_REMOUNT;
    mount(None::<&str>, target, None::<&str>, remount, Some("mode=755"))
        .context("remount /sys/fs/cgroup read-only")
}

/// Mounts one v1 hierarchy (`cpu,cpuacct`) at /sys/fs/cgroup/cpu,cpuacct, with a link
/// for each controller of a co-mounted pair, as hosts do.
fn mount_v1_hierarchy(target: &Path, controllers: &str) -> Result<()> {
    let dir: PathBuf = target.join(controllers);
    fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    mount(Some("cgroup"), &dir, Some("cgroup"), READ_ONLY, Some(controllers))
        .with_context(|| format!("mount the v1 hierarchy {controllers}"))?;
    if controllers.contains(',') {
        for controller in controllers.split(',') {
            std::os::unix::fs::symlink(controllers, target.join(controller))
                .with_context(|| format!("link /sys/fs/cgroup/{controller}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_found_by_key() {
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "max"), Some(3));
        assert_eq!(keyed_value(events, "oom_kill_x"), None);
    }

    #[test]
    fn limits_need_their_controllers() {
        let limits = Limits { memory: Some(1), cpu_weight: Some(5), ..Limits::default() };
        assert_eq!(needed_controllers(&limits), ["memory", "cpu"]);
        assert!(needed_controllers(&Limits::default()).is_empty());
    }

    #[test]
    fn writing_a_missing_control_file_says_the_kernel_lacks_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_value(dir.path(), "memory.swap.max", "0").unwrap_err();
        assert!(err.to_string().contains("this kernel lacks it"), "{err}");
    }
}
