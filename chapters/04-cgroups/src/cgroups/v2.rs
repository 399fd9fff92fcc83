//! cgroup v2: one tree for every controller; the container's cgroup is one directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

use super::{
    create_cgroup_dir, keyed_value, read_value, remove_cgroup_dir, subdirectory_names, wait_until,
    write_value, Stats,
};
use crate::limits::Limits;

/// The controllers crabbox uses, enabled for the cgroups below `crabbox/`.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// Creates `<root>/crabbox/<id>` with the `needed` controllers available in it.
    pub fn create(root: &Path, id: &str, needed: &[&str]) -> Result<Cgroup> {
        let parent = root.join("crabbox");
        enable_controllers(root, &parent, needed)?;
        let dir = parent.join(id);
        create_cgroup_dir(&dir)?;
        Ok(Cgroup { dir })
    }

    /// The cgroup `<root>/crabbox/<id>` that an earlier runtime made, if it is still there.
    pub fn existing(root: &Path, id: &str) -> Cgroup {
        Cgroup { dir: root.join("crabbox").join(id) }
    }

    #[cfg(test)]
    fn at(dir: &Path) -> Cgroup {
        Cgroup { dir: dir.into() }
    }

    // ANCHOR: apply_v2
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        // EXERCISE 4.2: write the limits into the v2 files: memory.max, memory.swap.max (swap alone: memory_swap - memory), cpu.max ("quota period"), cpu.weight, pids.max
        if let Some(memory) = limits.memory {
            write_value(&self.dir, "memory.max", &memory.to_string())?;
        }
        if let (Some(memory), Some(memory_swap)) = (limits.memory, limits.memory_swap) {
            // v2 limits swap on its own; docker's --memory-swap counts memory plus swap.
            write_value(&self.dir, "memory.swap.max", &(memory_swap - memory).to_string())?;
        }
        if let Some(cpu) = limits.cpu {
            write_value(&self.dir, "cpu.max", &format!("{} {}", cpu.quota_us, cpu.period_us))?;
        }
        if let Some(weight) = limits.cpu_weight {
            write_value(&self.dir, "cpu.weight", &weight.to_string())?;
        }
        if let Some(pids) = limits.pids {
            write_value(&self.dir, "pids.max", &pids.to_string())?;
        }
        Ok(())
        // END EXERCISE
    }
    // ANCHOR_END: apply_v2

    pub fn add_pid(&self, pid: Pid) -> Result<()> {
        write_value(&self.dir, "cgroup.procs", &pid.to_string())
    }

    pub fn oom_kills(&self) -> Result<u64> {
        Ok(keyed_value(&read_value(&self.dir, "memory.events")?, "oom_kill").unwrap_or(0))
    }

    pub fn stats(&self) -> Result<Stats> {
        let cpu = read_value(&self.dir, "cpu.stat")?;
        Ok(Stats {
            // memory.peak appeared in Linux 5.19.
            peak_memory: read_value(&self.dir, "memory.peak")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            cpu_usec: keyed_value(&cpu, "usage_usec"),
            throttled: keyed_value(&cpu, "nr_throttled"),
        })
    }

    // ANCHOR: remove_v2
    /// Kills every process left (cgroup.kill, Linux 5.14), waits until the cgroup is
    /// empty, and removes it.
    pub fn remove(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        write_value(&self.dir, "cgroup.kill", "1")?;
        wait_until("the cgroup to empty", || {
            Ok(keyed_value(&read_value(&self.dir, "cgroup.events")?, "populated") == Some(0))
        })?;
        remove_cgroup_dir(&self.dir)
    }
    // ANCHOR_END: remove_v2
}

/// The ids of the containers with a cgroup below `<root>/crabbox`.
pub fn container_ids(root: &Path) -> Result<Vec<String>> {
    subdirectory_names(&root.join("crabbox"))
}

/// Makes the `needed` controllers (and whichever others of CONTROLLERS the host offers)
/// available in the cgroups below `parent`. See cgroups(7), "cgroup.subtree_control": a
/// controller reaches a cgroup only if every ancestor enables it for its children.
fn enable_controllers(root: &Path, parent: &Path, needed: &[&str]) -> Result<()> {
    let offered = read_value(root, "cgroup.subtree_control")?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    for controller in needed {
        if !offered.contains(controller) {
            bail!(
                "cgroup v2 controller `{controller}` is not enabled in {}/cgroup.subtree_control; \
                 run `cargo xtask doctor`",
                root.display()
            );
        }
    }
    let enabled: Vec<&'static str> =
        CONTROLLERS.into_iter().filter(|controller| offered.contains(controller)).collect();
    std::fs::create_dir_all(parent)
        .with_context(|| format!("create cgroup {}", parent.display()))?;
    let plus: Vec<String> = enabled.iter().map(|controller| format!("+{controller}")).collect();
    write_value(parent, "cgroup.subtree_control", &plus.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{cpu_quota, Limits};

    /// A directory with the control files the kernel would create, empty.
    fn fake_cgroup(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        dir
    }

    #[test]
    fn limits_go_into_the_v2_files() {
        let files = ["memory.max", "memory.swap.max", "cpu.max", "cpu.weight", "pids.max"];
        let dir = fake_cgroup(&files);
        let limits = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(96 << 20),
            cpu: Some(cpu_quota(0.5)),
            cpu_weight: Some(200),
            pids: Some(20),
        };
        Cgroup::at(dir.path()).apply(&limits).unwrap();
        let read = |file: &str| std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "33554432");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), "200");
        assert_eq!(read("pids.max"), "20");
    }

    #[test]
    fn a_controller_the_host_does_not_delegate_is_an_error() {
        let root = fake_cgroup(&[]);
        std::fs::write(root.path().join("cgroup.subtree_control"), "memory pids\n").unwrap();
        let parent = root.path().join("crabbox");
        let err = enable_controllers(root.path(), &parent, &["cpu"]).unwrap_err();
        assert!(err.to_string().contains("controller `cpu` is not enabled"), "{err}");
    }
}
