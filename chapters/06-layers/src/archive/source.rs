//! Where the files of an image archive are read from: a directory (an OCI layout) or the
//! members of a tar (a docker-archive or an oci-archive), found by name. A tar is indexed
//! once and never extracted: each member a manifest names is read in place, so no name in
//! the archive ever becomes a path on the host.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

use anyhow::{bail, ensure, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::de::DeserializeOwned;

use crate::image::MAX_JSON_BYTES;
use crate::resolve::Root;

/// How many symlinks in a row a member's name may go through, as the kernel bounds a lookup.
const MAX_LINKS: usize = 40;

/// The files of an image archive.
#[derive(Debug)]
pub enum Source {
    /// A directory: each file opened inside it, so a symlink in it cannot lead out.
    Dir(Root),
    /// A tar file and where each of its members is.
    Tar { file: File, members: HashMap<String, Member> },
}

/// A member of a tar: its bytes in the archive, or the member a symlink names.
#[derive(Debug, Clone)]
pub enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

impl Source {
    /// Opens `path`: a directory as it is, a file as a tar whose members are indexed.
    pub fn open(path: &Path) -> Result<Source> {
        if path.is_dir() {
            return Ok(Source::Dir(Root::open(path)?));
        }
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut magic = [0; 2];
        // A gzip stream starts with 1f 8b (RFC 1952); its members cannot be read in place.
        if file.read_at(&mut magic, 0).is_ok_and(|read| read == 2) && magic == [0x1f, 0x8b] {
            bail!("{} is compressed with gzip; decompress it first (gunzip)", path.display());
        }
        let members = index_tar(&file).with_context(|| {
            format!("read {} as a tar (a docker-archive or an oci-archive)", path.display())
        })?;
        Ok(Source::Tar { file, members })
    }

    /// Whether the archive has a file `name`.
    pub fn has(&self, name: &str) -> bool {
        self.read(name).is_ok()
    }

    /// The file `name` as a stream, and its size.
    pub fn read(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let name = normalize(name)?;
        match self {
            Source::Dir(root) => {
                // O_NONBLOCK: a FIFO in a hostile layout must not hang the open.
                let flags =
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
                let fd = root.open_in_root(Path::new(&name), flags, Mode::empty());
                let file = File::from(fd.with_context(|| format!("open `{name}` in the layout"))?);
                let metadata = file.metadata()?;
                ensure!(metadata.is_file(), "`{name}` in the layout is not a regular file");
                Ok((Box::new(file), metadata.len()))
            }
            Source::Tar { file, members } => {
                let (offset, size) = find_member(members, &name)?;
                Ok((Box::new(Slice { file, offset, end: offset + size }), size))
            }
        }
    }

    /// The file `name`, whole; at most [`MAX_JSON_BYTES`], since it is held in memory.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (reader, size) = self.read(name)?;
        ensure!(
            size <= MAX_JSON_BYTES,
            "`{name}` has {size} bytes, more than a manifest, index or config may have"
        );
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .with_context(|| format!("read `{name}`"))?;
        Ok(bytes)
    }

    /// The file `name` parsed as JSON.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        serde_json::from_slice(&self.read_small(name)?).with_context(|| format!("parse `{name}`"))
    }
}

/// Where each member of the tar is. A name with `..` or a leading `/` is refused, and so is
/// a name given twice (which of the two a reader takes would be the attacker's choice).
fn index_tar(file: &File) -> Result<HashMap<String, Member>> {
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let kind = entry.header().entry_type();
        // Only files, and symlinks to them, are ever read; directories and the rest are not.
        let (file, link) = (kind.is_file() || kind.is_contiguous(), kind.is_symlink());
        if !file && !link {
            continue;
        }
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = normalize(&raw_name).context("the archive is not a docker or OCI archive")?;
        let member = if link {
            let target = entry.link_name_bytes().context("a symlink without a target")?;
            Member::Link(link_target(&name, &String::from_utf8_lossy(&target))?)
        } else {
            Member::File { offset: entry.raw_file_position(), size: entry.size() }
        };
        ensure!(
            members.insert(name.clone(), member).is_none(),
            "the archive has two members `{name}`"
        );
    }
    Ok(members)
}

/// The offset and size of the member `name`, following symlinks between members.
fn find_member(members: &HashMap<String, Member>, name: &str) -> Result<(u64, u64)> {
    let mut current = name.to_string();
    for _ in 0..MAX_LINKS {
        match members.get(&current) {
            Some(Member::File { offset, size }) => return Ok((*offset, *size)),
            Some(Member::Link(target)) => current = target.clone(),
            None => bail!("the archive has no file `{name}`"),
        }
    }
    bail!("`{name}` in the archive is a loop of symlinks")
}

/// `name` as a relative path of normal components, without `./`; `..` and absolute names
/// are refused: they are how a hostile archive reaches outside itself.
fn normalize(name: &str) -> Result<String> {
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                bail!("the member name `{name}` leaves the archive (`..` or absolute)")
            }
        }
    }
    ensure!(!parts.is_empty(), "an empty member name");
    Ok(parts.join("/"))
}

/// The member a symlink `link` with target `target` names: relative to the link's
/// directory, and inside the archive (docker save links a layer shared by two images).
fn link_target(link: &str, target: &str) -> Result<String> {
    ensure!(!target.starts_with('/'), "the symlink `{link}` points to an absolute path `{target}`");
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts
                    .pop()
                    .with_context(|| format!("the symlink `{link}` points out of the archive"))?;
            }
            part => parts.push(part),
        }
    }
    normalize(&parts.join("/"))
}

/// A member's bytes, read in place with pread(2) so that several can be open at once.
struct Slice<'a> {
    file: &'a File,
    offset: u64,
    end: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.end - self.offset).min(buf.len() as u64) as usize;
        let read = self.file.read_at(&mut buf[..left], self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_archive_are_refused() {
        assert_eq!(normalize("./blobs/sha256/ab").unwrap(), "blobs/sha256/ab");
        for name in ["../etc/passwd", "/etc/passwd", "a/../../b", "."] {
            assert!(normalize(name).is_err(), "{name}");
        }
    }

    #[test]
    fn links_stay_inside_the_archive() {
        assert_eq!(link_target("b/layer.tar", "../a/layer.tar").unwrap(), "a/layer.tar");
        assert!(link_target("b/layer.tar", "../../etc/passwd").is_err());
        assert!(link_target("b/layer.tar", "/etc/passwd").is_err());
    }

    #[test]
    fn a_member_is_read_in_place_and_links_are_followed() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        builder.append_data(&mut header, "a/layer.tar", &b"hello"[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "b/layer.tar", "../a/layer.tar").unwrap();
        let dir = tempfile::Builder::new().prefix("crabbox-").tempdir().unwrap();
        let path = dir.path().join("archive.tar");
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        let source = Source::open(&path).unwrap();
        let (mut reader, size) = source.read("./b/layer.tar").unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), size), ("hello", 5));
        assert!(!source.has("c"));
    }
}
