//! Cleaning up after a container, whatever happened to it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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
        // Only a reclaimer that removed the file between our open and our lock makes this
        // go round again.
        for _ in 0..100 {
            if let Some(lock) = RuntimeLock::lock(id, FlockArg::LockExclusive)? {
                return Ok(lock);
            }
        }
        bail!("lock {}: the lock file keeps being removed", lock_path(id).display())
    }

    /// The lock of `id`, when no runtime holds it (or there is none): `None` while the
    /// container's runtime is alive.
    pub fn take_if_abandoned(id: &str) -> Result<Option<RuntimeLock>> {
        RuntimeLock::lock(id, FlockArg::LockExclusiveNonblock)
    }

    /// Locks the lock file of `id` as `how` says. `None` when that would block, or when the
    /// file was removed after it was opened (a reclaimer took it while it was still free):
    /// a lock on a file that no longer has the lock's name guards nothing.
    fn lock(id: &str, how: FlockArg) -> Result<Option<RuntimeLock>> {
        let path = lock_path(id);
        fs::create_dir_all(RUNTIME_LOCKS).with_context(|| format!("create {RUNTIME_LOCKS}"))?;
        let file = File::create(&path).with_context(|| format!("open {}", path.display()))?;
        let lock = match Flock::lock(file, how) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("lock {}", path.display()))
            }
        };
        let locked = lock.metadata().with_context(|| format!("stat {}", path.display()))?;
        let named = fs::metadata(&path).ok();
        let same =
            named.is_some_and(|named| (named.dev(), named.ino()) == (locked.dev(), locked.ino()));
        Ok(same.then_some(RuntimeLock { path, _lock: lock }))
    }
}

/// The lock file goes once its container is cleaned up; the lock itself with the process.
impl Drop for RuntimeLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
// ANCHOR_END: runtime_lock

/// The ids that have a lock file in [`RUNTIME_LOCKS`].
fn locked_ids() -> Result<Vec<String>> {
    let entries = match fs::read_dir(RUNTIME_LOCKS) {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries.with_context(|| format!("list {RUNTIME_LOCKS}"))?,
    };
    let names = entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    Ok(names.filter_map(|name| Some(name.strip_suffix(".lock")?.to_string())).collect())
}

fn lock_path(id: &str) -> PathBuf {
    Path::new(RUNTIME_LOCKS).join(format!("{id}.lock"))
}

// ANCHOR: reclaim_stale_cgroups
/// Removes the cgroups of containers whose runtime is gone (killed with SIGKILL, say, which
/// lets no process clean up), killing whatever still runs in them, and their runtimes'
/// lock files. Returns their ids.
pub fn reclaim_stale_cgroups(setup: CgroupSetup) -> Result<Vec<String>> {
    let (mut reclaimed, mut failures) = (Vec::new(), Vec::new());
    let mut ids: BTreeSet<String> = container_ids(setup)?.into_iter().collect();
    // A runtime killed between taking its lock and making its cgroup left just the file.
    ids.extend(locked_ids()?);
    for id in ids {
        // A runtime takes its lock before it makes its cgroup, so a cgroup whose lock is
        // free was left by a runtime that has ended.
        let Some(_lock) = RuntimeLock::take_if_abandoned(&id)? else { continue };
        let removed = remove_stale_cgroup(setup, &id);
        // One cgroup that will not go must not keep the others.
        match removed {
            Ok(()) => reclaimed.push(id),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(reclaimed)
}

/// Removes the cgroup of `id`, whose runtime is gone, with whatever still runs in it.
fn remove_stale_cgroup(setup: CgroupSetup, id: &str) -> Result<()> {
    // EXERCISE 4.5: the runtime of `id` is gone: remove its cgroup in every hierarchy it is in, killing whatever still runs there
    Cgroup::existing(setup, id)?
        .remove()
        .with_context(|| format!("remove the cgroup of the stale container {id}"))
    // END EXERCISE
}
// ANCHOR_END: reclaim_stale_cgroups
