//! Where `image save` writes: a directory or a tar, made beside the destination under a
//! temporary name and renamed into place once complete, so a failed save leaves nothing.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use tempfile::{NamedTempFile, TempDir};

/// The output of a save, being written.
pub enum Sink {
    Dir { staging: TempDir, path: PathBuf },
    Tar { builder: tar::Builder<BufWriter<File>>, staging: NamedTempFile, path: PathBuf },
}

impl Sink {
    /// A directory at `path`, which must not exist yet.
    pub fn dir(path: &Path) -> Result<Sink> {
        ensure!(!path.exists(), "{} exists; save to a new directory", path.display());
        let staging = tempfile::Builder::new().prefix(".crabbox-save-").tempdir_in(parent(path))?;
        Ok(Sink::Dir { staging, path: path.to_path_buf() })
    }

    /// A tar at `path`, replacing what is there (as `docker save -o` does).
    pub fn tar(path: &Path) -> Result<Sink> {
        let staging =
            tempfile::Builder::new().prefix(".crabbox-save-").tempfile_in(parent(path))?;
        let builder = tar::Builder::new(BufWriter::new(staging.as_file().try_clone()?));
        Ok(Sink::Tar { builder, staging, path: path.to_path_buf() })
    }

    /// Adds the file `name` (a relative path this code chose) of `size` bytes from `reader`.
    pub fn add(&mut self, name: &str, size: u64, reader: impl Read) -> Result<()> {
        let added = match self {
            Sink::Dir { staging, .. } => add_to_dir(&staging.path().join(name), reader),
            Sink::Tar { builder, .. } => {
                let mut header = tar::Header::new_gnu();
                header.set_size(size);
                header.set_mode(0o644);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, name, reader)
            }
        };
        added.with_context(|| format!("write `{name}`"))
    }

    /// Adds the file `name` with the bytes `bytes`.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.add(name, bytes.len() as u64, bytes)
    }

    /// Completes the output and renames it into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Sink::Dir { staging, path } => {
                let staging = staging.keep();
                if let Err(err) = fs::rename(&staging, &path) {
                    let _ = fs::remove_dir_all(&staging);
                    return Err(err.into());
                }
            }
            Sink::Tar { builder, staging, path } => {
                builder.into_inner()?.flush()?;
                staging.as_file().sync_all()?;
                staging.persist(&path)?;
            }
        }
        Ok(())
    }
}

/// Writes the file at `path` of a layout being made, with its directories.
fn add_to_dir(path: &Path, mut reader: impl Read) -> io::Result<()> {
    fs::create_dir_all(path.parent().expect("a file in the layout has a directory"))?;
    let mut file = BufWriter::new(File::create(path)?);
    io::copy(&mut reader, &mut file)?;
    file.flush()
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."))
}
