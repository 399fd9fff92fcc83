//! cgroup v1: one tree per controller; the container's cgroup is one directory in each.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{
    create_cgroup_dir, keyed_value, read_value, remove_cgroup_dir, subdirectory_names, wait_until,
    write_value, Stats,
};
use crate::limits::Limits;

/// The hierarchies crabbox uses: the three it limits, cpuacct for statistics and the
/// freezer to stop everything before killing it.
const CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

#[derive(Debug)]
pub struct Cgroup {
    /// The cgroup's directory in each hierarchy, by controller. Co-mounted controllers
    /// (cpu,cpuacct) share one directory.
    dirs: Vec<(&'static str, PathBuf)>,
}

impl Cgroup {
    /// Creates `<root>/<controller>/crabbox/<id>` in each hierarchy the host has; on
    /// failure, removes what it made.
    pub fn create(root: &Path, id: &str, needed: &[&str]) -> Result<Cgroup> {
        let mut cgroup = Cgroup { dirs: Vec::new() };
        if let Err(err) = cgroup.create_dirs(root, id, needed) {
            return Err(match cgroup.remove() {
                Ok(()) => err,
                Err(cleanup) => err.context(format!("and removing the cgroup failed: {cleanup:#}")),
            });
        }
        Ok(cgroup)
    }

    fn create_dirs(&mut self, root: &Path, id: &str, needed: &[&str]) -> Result<()> {
        for controller in CONTROLLERS {
            let Some(dir) = cgroup_dir(root, controller, id)? else {
                if needed.contains(&controller) {
                    bail!(
                        "cgroup v1 controller `{controller}` is not mounted at {}; \
                         run `cargo xtask doctor`",
                        root.join(controller).display()
                    );
                }
                continue;
            };
            if !self.unique_dirs().contains(&dir) {
                let parent = dir.parent().expect("a cgroup dir has a parent");
                fs::create_dir_all(parent)
                    .with_context(|| format!("create cgroup {}", parent.display()))?;
                create_cgroup_dir(&dir)?;
            }
            self.dirs.push((controller, dir));
        }
        Ok(())
    }

    /// The cgroup `crabbox/<id>` that an earlier runtime made, in each hierarchy the host
    /// mounts; [`Cgroup::remove`] skips the directories that are not there.
    pub fn existing(root: &Path, id: &str) -> Result<Cgroup> {
        let mut dirs = Vec::new();
        for controller in CONTROLLERS {
            if let Some(dir) = cgroup_dir(root, controller, id)? {
                dirs.push((controller, dir));
            }
        }
        Ok(Cgroup { dirs })
    }

    #[cfg(test)]
    fn at(dirs: Vec<(&'static str, PathBuf)>) -> Cgroup {
        Cgroup { dirs }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(name, _)| *name == controller).map(|(_, dir)| dir.as_path())
    }

    fn unique_dirs(&self) -> BTreeSet<PathBuf> {
        self.dirs.iter().map(|(_, dir)| dir.clone()).collect()
    }

    fn controller_dir(&self, controller: &str) -> Result<&Path> {
        self.dir(controller).with_context(|| format!("no cgroup v1 `{controller}` hierarchy"))
    }

    // ANCHOR: apply_v1
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        // EXERCISE 4.3: write the limits into the v1 files of each hierarchy: memory.limit_in_bytes, memory.memsw.limit_in_bytes, cpu.cfs_period_us then cpu.cfs_quota_us, cpu.shares, pids.max
        if let Some(memory) = limits.memory {
            let dir = self.controller_dir("memory")?;
            write_value(dir, "memory.limit_in_bytes", &memory.to_string())?;
            if let Some(memory_swap) = limits.memory_swap {
                // memsw counts memory plus swap, and must not be set below the memory limit,
                // so it comes second. It exists only with swap accounting (swapaccount=1).
                write_value(dir, "memory.memsw.limit_in_bytes", &memory_swap.to_string())?;
            }
        }
        if let Some(cpu) = limits.cpu {
            let dir = self.controller_dir("cpu")?;
            write_value(dir, "cpu.cfs_period_us", &cpu.period_us.to_string())?;
            write_value(dir, "cpu.cfs_quota_us", &cpu.quota_us.to_string())?;
        }
        if let Some(weight) = limits.cpu_weight {
            write_value(
                self.controller_dir("cpu")?,
                "cpu.shares",
                &cpu_shares(weight).to_string(),
            )?;
        }
        if let Some(pids) = limits.pids {
            write_value(self.controller_dir("pids")?, "pids.max", &pids.to_string())?;
        }
        Ok(())
        // END EXERCISE
    }
    // ANCHOR_END: apply_v1

    pub fn add_pid(&self, pid: Pid) -> Result<()> {
        for dir in self.unique_dirs() {
            write_value(&dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    pub fn oom_kills(&self) -> Result<u64> {
        let Some(memory) = self.dir("memory") else { return Ok(0) };
        // oom_kill appeared in memory.oom_control in Linux 4.13.
        Ok(keyed_value(&read_value(memory, "memory.oom_control")?, "oom_kill").unwrap_or(0))
    }

    pub fn stats(&self) -> Result<Stats> {
        let number = |controller: &str, file: &str| -> Option<u64> {
            read_value(self.dir(controller)?, file).ok()?.trim().parse().ok()
        };
        let throttled = self
            .dir("cpu")
            .and_then(|dir| read_value(dir, "cpu.stat").ok())
            .and_then(|stat| keyed_value(&stat, "nr_throttled"));
        Ok(Stats {
            peak_memory: number("memory", "memory.max_usage_in_bytes"),
            // cpuacct.usage counts nanoseconds.
            cpu_usec: number("cpuacct", "cpuacct.usage").map(|ns| ns / 1000),
            throttled,
        })
    }

    // ANCHOR: remove_v1
    /// Freezes the cgroup so nothing in it can fork, kills everything in it, thaws it so
    /// the kills are delivered, waits until it is empty, and removes it from each hierarchy.
    pub fn remove(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = self.unique_dirs().into_iter().filter(|d| d.exists()).collect();
        let freezer = self.dir("freezer").filter(|dir| dir.exists());
        // Even if freezing fails (a process stuck in the kernel), kill and thaw anyway: a
        // cgroup left FROZEN would hold its processes stopped forever.
        let frozen = freezer.map(freeze).transpose();
        for pid in dirs.iter().flat_map(|dir| processes_in(dir)) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let thawed = freezer.map(|dir| write_value(dir, "freezer.state", "THAWED")).transpose();
        frozen?;
        thawed?;
        wait_until("the cgroup to empty", || {
            Ok(dirs.iter().all(|dir| processes_in(dir).is_empty()))
        })?;
        dirs.iter().try_for_each(|dir| remove_cgroup_dir(dir))
    }
    // ANCHOR_END: remove_v1
}

/// `<root>/<controller>/crabbox/<id>`, through the link of a co-mounted controller
/// (cpu -> cpu,cpuacct); `None` when the host does not mount that hierarchy.
fn cgroup_dir(root: &Path, controller: &str, id: &str) -> Result<Option<PathBuf>> {
    let hierarchy = root.join(controller);
    if !hierarchy.join("cgroup.procs").exists() {
        return Ok(None);
    }
    let hierarchy =
        hierarchy.canonicalize().with_context(|| format!("resolve {}", hierarchy.display()))?;
    Ok(Some(hierarchy.join("crabbox").join(id)))
}

/// The ids of the containers with a cgroup below `crabbox/` in any hierarchy.
pub fn container_ids(root: &Path) -> Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    for controller in CONTROLLERS {
        ids.extend(subdirectory_names(&root.join(controller).join("crabbox"))?);
    }
    Ok(ids.into_iter().collect())
}

fn freeze(freezer: &Path) -> Result<()> {
    write_value(freezer, "freezer.state", "FROZEN")?;
    wait_until("the cgroup to freeze", || {
        Ok(read_value(freezer, "freezer.state")?.trim() == "FROZEN")
    })
}

fn processes_in(dir: &Path) -> Vec<Pid> {
    let procs = read_value(dir, "cgroup.procs").unwrap_or_default();
    procs.lines().filter_map(|pid| pid.trim().parse().ok()).map(Pid::from_raw).collect()
}

/// cgroup v2's cpu.weight (1 to 10000, default 100) as v1's cpu.shares (default 1024).
pub fn cpu_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).max(2)
}

/// The controller sets of the host's mounted v1 hierarchies (`cpu,cpuacct`, `memory`, …),
/// from /proc/self/cgroup; named hierarchies like name=systemd are left out.
pub fn mounted_hierarchies() -> Result<Vec<String>> {
    let text = fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .filter(|controllers| !controllers.is_empty() && !controllers.starts_with("name="))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::cpu_quota;

    #[test]
    fn limits_go_into_the_v1_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = |controller: &str, files: &[&str]| {
            let dir = root.path().join(controller);
            fs::create_dir(&dir).unwrap();
            for file in files {
                fs::write(dir.join(file), "").unwrap();
            }
            dir
        };
        let memory = dir("memory", &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]);
        let cpu = dir("cpu", &["cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"]);
        let pids = dir("pids", &["pids.max"]);
        let cgroup = Cgroup::at(vec![
            ("memory", memory.clone()),
            ("cpu", cpu.clone()),
            ("pids", pids.clone()),
        ]);
        let limits = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(96 << 20),
            cpu: Some(cpu_quota(0.5)),
            cpu_weight: Some(50),
            pids: Some(20),
        };
        cgroup.apply(&limits).unwrap();
        let read = |dir: &Path, file: &str| fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
        assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "100663296");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&pids, "pids.max"), "20");
    }

    #[test]
    fn weights_map_to_shares() {
        assert_eq!(cpu_shares(100), 1024);
        assert_eq!(cpu_shares(1), 10);
        assert_eq!(cpu_shares(10000), 102400);
    }
}
