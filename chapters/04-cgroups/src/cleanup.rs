//! Cleaning up after a container, whatever happened to it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::cgroups::{container_ids, Cgroup, CgroupSetup};

/// Combines what running a container gave with what cleaning up after it (`what`) gave:
/// the container's own error comes first, and a failed clean-up is never hidden.
pub fn after_cleanup<T>(result: Result<T>, cleanup: Result<()>, what: &str) -> Result<T> {
    match (result, cleanup) {
        (result, Ok(())) => result,
        (Ok(_), Err(cleanup)) => Err(cleanup.context(format!("{what} failed"))),
        (Err(err), Err(cleanup)) => {
            Err(err.context(format!("and then {what} failed: {cleanup:#}")))
        }
    }
}

/// Where runtimes hold their locks: `<id>.lock` for the container `<id>`.
pub const RUNTIME_LOCKS: &str = "/run/crabbox/containers";

// ANCHOR: runtime_lock
/// The lock a runtime holds for as long as it runs a container: an exclusive flock(2) on
/// `/run/crabbox/containers/<id>.lock`. The kernel drops it when the runtime's process
/// ends, however it ends, so a container whose lock can be taken has no runtime any more,
/// and whatever it left on the host is the next runtime's to remove.
#[derive(Debug)]
pub struct RuntimeLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl RuntimeLock {
    /// Takes the lock of the new container `id`, before anything of it exists.
    pub fn take(id: &str) -> Result<RuntimeLock> {
        let (path, file) = open_lock_file(id)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("lock {}", path.display()))?;
        Ok(RuntimeLock { path, _lock: lock })
    }

    /// The lock of `id`, when no runtime holds it (or there is none): `None` while the
    /// container's runtime is alive.
    fn take_if_abandoned(id: &str) -> Result<Option<RuntimeLock>> {
        let (path, file) = open_lock_file(id)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(RuntimeLock { path, _lock: lock })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno).with_context(|| format!("lock {}", path.display())),
        }
    }
}

/// The lock file goes once its container is cleaned up; the lock itself with the process.
impl Drop for RuntimeLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
// ANCHOR_END: runtime_lock

fn open_lock_file(id: &str) -> Result<(PathBuf, File)> {
    fs::create_dir_all(RUNTIME_LOCKS).with_context(|| format!("create {RUNTIME_LOCKS}"))?;
    let path = Path::new(RUNTIME_LOCKS).join(format!("{id}.lock"));
    let file = File::create(&path).with_context(|| format!("open {}", path.display()))?;
    Ok((path, file))
}

// ANCHOR: reclaim_stale_cgroups
/// Removes the cgroups of containers whose runtime is gone (killed with SIGKILL, say, which
/// lets no process clean up), killing whatever still runs in them. Returns their ids.
pub fn reclaim_stale_cgroups(setup: CgroupSetup) -> Result<Vec<String>> {
    let mut reclaimed = Vec::new();
    for id in container_ids(setup)? {
        // A runtime takes its lock before it makes its cgroup, so a cgroup whose lock is
        // free was left by a runtime that has ended.
        let Some(_lock) = RuntimeLock::take_if_abandoned(&id)? else { continue };
        // EXERCISE 4.5: the runtime of `id` is gone: remove its cgroup in every hierarchy it is in, killing whatever still runs there
        Cgroup::existing(setup, &id)?
            .remove()
            .with_context(|| format!("remove the cgroup of the stale container {id}"))?;
        // END EXERCISE
        reclaimed.push(id);
    }
    Ok(reclaimed)
}
// ANCHOR_END: reclaim_stale_cgroups
