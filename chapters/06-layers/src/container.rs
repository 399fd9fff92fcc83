//! A container on disk: `containers/<id>/` in the store's root holds its writable layer
//! (`upper`), overlayfs's `work`, the `merged` mount point and `container.json`, which
//! names its image and layers. It stays after the container exits (unless `--rm`), for
//! `ps -a`, `diff`, `commit` and `rm`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ch04_cgroups::cleanup::RuntimeLock;
use serde::{Deserialize, Serialize};

const RECORD: &str = "container.json";

/// What `container.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's id (its config's digest): the store keeps its layers while this exists.
    pub image_id: String,
    /// The image's layers, bottom first: directories of the store's `layers/`.
    pub lowers: Vec<PathBuf>,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Removed when the container exits (`--rm`), or by `cleanup` if its runtime died.
    pub auto_remove: bool,
    /// Set when the container has exited; `None` while it runs, or when its runtime died.
    pub exit_code: Option<u8>,
}

/// The directory of one container.
#[derive(Debug)]
pub struct ContainerDir {
    pub path: PathBuf,
}

impl ContainerDir {
    /// Creates the directories of a new container and its record.
    pub fn create(containers: &Path, record: &ContainerRecord) -> Result<ContainerDir> {
        let dir = ContainerDir { path: containers.join(&record.id) };
        for sub in ["upper", "work", "merged"] {
            let path = dir.path.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        }
        dir.write(record)?;
        Ok(dir)
    }

    /// The container whose id is `id` or starts with it, as docker accepts a short id.
    pub fn find(containers: &Path, id: &str) -> Result<ContainerDir> {
        let matching: Vec<String> =
            list_ids(containers)?.into_iter().filter(|known| known.starts_with(id)).collect();
        match matching.as_slice() {
            [one] if !id.is_empty() => Ok(ContainerDir { path: containers.join(one) }),
            [] | [_] => bail!("no such container: `{id}` (`ch06 ps -a` lists them)"),
            _ => bail!("`{id}` names {} containers; give more of the id", matching.len()),
        }
    }

    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    pub fn merged(&self) -> PathBuf {
        self.path.join("merged")
    }

    pub fn read(&self) -> Result<ContainerRecord> {
        let path = self.path.join(RECORD);
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Replaces the record at once (a new file renamed over the old one), so a reader never
    /// sees half of it.
    pub fn write(&self, record: &ContainerRecord) -> Result<()> {
        let path = self.path.join(RECORD);
        let new = self.path.join(format!(".{RECORD}.new"));
        let text = serde_json::to_string_pretty(record).expect("a record serializes");
        fs::write(&new, text).with_context(|| format!("write {}", new.display()))?;
        fs::rename(&new, &path).with_context(|| format!("rename {}", new.display()))
    }

    /// Removes the container: its writable layer and its record.
    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.path).with_context(|| format!("remove {}", self.path.display()))
    }
}

/// Whether a runtime still runs the container `id`: it holds the container's lock.
pub fn is_running(id: &str) -> Result<bool> {
    Ok(RuntimeLock::take_if_abandoned(id)?.is_none())
}

/// The ids of every container in `containers`.
pub fn list_ids(containers: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(containers) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("list {}", containers.display())),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let name = entry.with_context(|| format!("list {}", containers.display()))?.file_name();
        ids.extend(name.to_str().filter(|name| !name.starts_with('.')).map(String::from));
    }
    ids.sort();
    Ok(ids)
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// How long ago `created` was, as `docker ps` says it.
pub fn ago(created: u64) -> String {
    let seconds = now().saturating_sub(created);
    match seconds {
        0..=59 => format!("{seconds} seconds ago"),
        60..=3599 => format!("{} minutes ago", seconds / 60),
        3600..=86399 => format!("{} hours ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86400),
    }
}
