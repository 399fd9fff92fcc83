//! A layer's tar, unpacked into a directory without ever writing outside it. The tar crate
//! only parses the entries (with their PAX and GNU long names); every path is then opened
//! inside the layer with `openat2(2)` `RESOLVE_IN_ROOT`, so a symlink an earlier entry
//! made (`etc -> /`, `x -> ../../..`) leads back into the layer, never out of it, and the
//! last component is made with `*at` calls that do not follow a symlink already there.
//! Whiteouts become what overlayfs reads (Documentation/filesystems/overlayfs.rst).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tar::{Entry, EntryType};
use xattr::FileExt;

use crate::resolve::Root;

/// How much of the tar is read at once, and how much of a file is written at once.
const READ_BUFFER: usize = 256 << 10;
const COPY_BUFFER: usize = 1 << 20;

/// `DIR/.wh.NAME` hides NAME of the layers below; `DIR/.wh..wh..opq` hides all of DIR's
/// entries below (OCI image-spec, layer.md, "Whiteouts").
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// What overlayfs reads instead: a 0/0 character device for a whiteout, and this xattr set
/// to `y` on an opaque directory.
const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// The xattrs kept from PAX `SCHILY.xattr.NAME` records: file capabilities (`ping`'s
/// `cap_net_raw`) and the user's own. `trusted.*` is left out, since `trusted.overlay.*`
/// would change how overlayfs reads the layer (redirects, metacopy, opaque directories are
/// made from whiteouts only); and so is the rest of `security.*` (SELinux labels of the
/// machine that built the image mean nothing here).
fn keeps_xattr(name: &[u8]) -> bool {
    name == b"security.capability" || name.starts_with(b"user.")
}

// ANCHOR: unpack_layer
/// Unpacks the tar `tar` into the directory `dest`, which is the root for every path in it.
pub fn unpack_layer(tar: impl Read, dest: &Path) -> Result<()> {
    let mut unpacker =
        Unpacker { root: Root::open(dest)?, buffer: vec![0; COPY_BUFFER], dirs: Vec::new() };
    let mut archive = tar::Archive::new(BufReader::with_capacity(READ_BUFFER, tar));
    let mut path = Vec::new();
    let entries = archive.entries().context("read the layer's tar")?;
    for entry in entries {
        let mut entry = entry.with_context(|| match path.is_empty() {
            true => "read the layer's tar".to_string(),
            false => format!("read the layer's tar after entry `{}`", show(&path)),
        })?;
        path.clear();
        path.extend_from_slice(&entry.path_bytes());
        unpacker.unpack(&mut entry, &path).with_context(|| format!("entry `{}`", show(&path)))?;
    }
    unpacker.set_dir_times()
}
// ANCHOR_END: unpack_layer

/// An entry's path for an error message.
fn show(path: &[u8]) -> std::path::Display<'_> {
    Path::new(OsStr::from_bytes(path)).display()
}

/// The state of one extraction: the layer's root, a buffer for file contents, and the
/// directories whose times are set at the end (each file made in one changes its mtime).
struct Unpacker {
    root: Root,
    buffer: Vec<u8>,
    dirs: Vec<(PathBuf, TimeSpec)>,
}

/// The owner, mode, mtime and kept xattrs of an entry, checked before anything is made.
struct Metadata {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Metadata {
    fn of(entry: &mut Entry<impl Read>) -> Result<Metadata> {
        let header = entry.header();
        let uid = u32::try_from(header.uid()?).context("the owner's uid is past 2^32")?;
        let gid = u32::try_from(header.gid()?).context("the group's gid is past 2^32")?;
        let mtime = i64::try_from(header.mtime()?).context("the mtime is past 2^63")?;
        Ok(Metadata {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            // The file type is the entry's type; only the permission bits and setuid,
            // setgid and sticky come from the mode.
            mode: Mode::from_bits_truncate(header.mode()? & 0o7777),
            mtime: TimeSpec::new(mtime, 0),
            xattrs: kept_xattrs(entry)?,
        })
    }

    /// Sets owner, mode, xattrs and times on an open file or directory. The order matters:
    /// chown(2) clears setuid and setgid, and the kernel drops `security.capability` on
    /// chown and on write, so the mode and the xattrs come after both.
    fn apply(&self, fd: OwnedFd) -> Result<()> {
        fchown(&fd, Some(self.uid), Some(self.gid)).context("chown")?;
        fchmod(&fd, self.mode).context("chmod")?;
        let file = File::from(fd);
        for (name, value) in &self.xattrs {
            file.set_xattr(name, value).with_context(|| format!("set xattr {}", name.display()))?;
        }
        futimens(&file, &self.mtime, &self.mtime).context("set the mtime")?;
        Ok(())
    }

    /// Sets owner, mode and times on `name` in `dir` itself, never on what it points to: for
    /// symlinks, devices and fifos, which are not opened (xattr(7): `user.*` is for files
    /// and directories only, and a capability means something on an executable only).
    fn apply_at(&self, dir: &OwnedFd, name: &OsStr, symlink: bool) -> Result<()> {
        fchownat(dir, name, Some(self.uid), Some(self.gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .context("chown")?;
        // A symlink has no mode of its own (symlink(7)); the device or fifo was just made,
        // so its name is no symlink and following it is safe.
        if !symlink {
            fchmodat(dir, name, self.mode, FchmodatFlags::FollowSymlink).context("chmod")?;
        }
        utimensat(dir, name, &self.mtime, &self.mtime, UtimensatFlags::NoFollowSymlink)
            .context("set the mtime")?;
        Ok(())
    }
}

/// The xattrs of an entry's PAX records that `keeps_xattr` keeps.
fn kept_xattrs(entry: &mut Entry<impl Read>) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut xattrs = Vec::new();
    let Some(extensions) = entry.pax_extensions().context("read the PAX records")? else {
        return Ok(xattrs);
    };
    for extension in extensions {
        let extension = extension.context("read a PAX record")?;
        if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            if keeps_xattr(name) {
                let name = OsStr::from_bytes(name).to_os_string();
                xattrs.push((name, extension.value_bytes().to_vec()));
            }
        }
    }
    Ok(xattrs)
}

/// What a whiteout entry asks for.
enum Whiteout<'a> {
    /// Hide this name of the layers below.
    Name(&'a OsStr),
    /// Hide every entry below of the directory the whiteout is in.
    Opaque,
}

/// The whiteout `name` is, if it is one. The name it hides must be a name: `.wh..` or
/// `.wh...` would hide the directory or its parent, and are refused.
fn whiteout(name: &OsStr) -> Result<Option<Whiteout<'_>>> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_WHITEOUT {
        return Ok(Some(Whiteout::Opaque));
    }
    let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX) else { return Ok(None) };
    if matches!(hidden, b"" | b"." | b"..") {
        bail!("a whiteout must name a file in its directory, not `{}`", show(hidden));
    }
    Ok(Some(Whiteout::Name(OsStr::from_bytes(hidden))))
}

// ANCHOR: split
/// Splits an entry's path into its directory and its name; `None` is the layer's root.
/// A leading `/` and `.` components change nothing (the layer is the root, and GNU tar
/// strips the `/`); `..` is refused, as GNU tar refuses it, and so is a directory named
/// like a whiteout (`.wh.x/y`), which would be read as one when the layer is saved again.
fn split(path: &[u8]) -> Result<Option<(&Path, &OsStr)>> {
    let path = Path::new(OsStr::from_bytes(path));
    if path.components().any(|component| component == Component::ParentDir) {
        bail!("a path with `..` is refused: a layer names its files from its root");
    }
    let Some(name) = path.file_name() else { return Ok(None) };
    let parent = path.parent().unwrap_or(Path::new(""));
    if parent.components().any(|component| {
        matches!(component, Component::Normal(dir) if dir.as_bytes().starts_with(WHITEOUT_PREFIX))
    }) {
        bail!("a directory named like a whiteout (.wh.*) is refused");
    }
    Ok(Some((parent, name)))
}
// ANCHOR_END: split

impl Unpacker {
    /// Makes what one entry describes, in the directory its path names inside the root.
    fn unpack(&mut self, entry: &mut Entry<impl Read>, path: &[u8]) -> Result<()> {
        let kind = entry.header().entry_type();
        // A PAX global header describes the archive, not a file.
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let Some((parent, name)) = split(path)? else { return self.unpack_root(entry, kind) };
        if let Some(whiteout) = whiteout(name)? {
            return self.unpack_whiteout(parent, whiteout);
        }
        let metadata = Metadata::of(entry)?;
        let dir = self.open_parent(parent)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.unpack_file(&dir, name, entry, &metadata)
            }
            EntryType::Directory => {
                let made = make_dir(&dir, name)?;
                self.dirs.push((Path::new(OsStr::from_bytes(path)).to_path_buf(), metadata.mtime));
                metadata.apply(made)
            }
            EntryType::Symlink => {
                let target = link_name(entry)?;
                replacing(&dir, name, || symlinkat(&*target, &dir, name))
                    .context("make the symlink")?;
                metadata.apply_at(&dir, name, true)
            }
            EntryType::Link => self.unpack_hard_link(&dir, name, &link_name(entry)?),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (kind, device) = node(entry, kind)?;
                replacing(&dir, name, || mknodat(&dir, name, kind, Mode::empty(), device))
                    .context("make the device or fifo")?;
                metadata.apply_at(&dir, name, false)
            }
            other => bail!(
                "a tar entry of type {other:?} is not a file, directory, link, device or fifo"
            ),
        }
    }

    /// `./` names the layer's root: its owner, mode and times are the root directory's.
    fn unpack_root(&mut self, entry: &mut Entry<impl Read>, kind: EntryType) -> Result<()> {
        if kind != EntryType::Directory {
            bail!("the entry names the layer's root, but is not a directory");
        }
        let metadata = Metadata::of(entry)?;
        let root = self.open_dir(Path::new(""))?;
        self.dirs.push((PathBuf::new(), metadata.mtime));
        metadata.apply(root)
    }

    /// Opens the directory `parent` inside the root, creating what is missing: a tar need
    /// not list the directories of its files.
    fn open_parent(&self, parent: &Path) -> Result<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match self.root.open_in_root(parent, flags, Mode::empty()) {
            Err(Errno::ENOENT) => self.root.create_dir_all(parent),
            result => result.with_context(|| format!("open the directory /{}", parent.display())),
        }
    }

    /// Opens the directory `path` inside the root for reading, creating it when missing.
    fn open_dir(&self, path: &Path) -> Result<OwnedFd> {
        self.open_parent(path)?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        self.root
            .open_in_root(path, flags, Mode::empty())
            .with_context(|| format!("open the directory /{}", path.display()))
    }

    /// A regular file: created new (never opened through a symlink or truncated in place,
    /// which would change its hard links too), then written, then its metadata set.
    fn unpack_file(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        entry: &mut Entry<impl Read>,
        metadata: &Metadata,
    ) -> Result<()> {
        let flags =
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = replacing(dir, name, || openat(dir, name, flags, Mode::from_bits_truncate(0o600)))
            .context("create the file")?;
        let mut file = File::from(fd);
        loop {
            let read = entry.read(&mut self.buffer).context("read the file from the tar")?;
            if read == 0 {
                break;
            }
            file.write_all(&self.buffer[..read]).context("write the file")?;
        }
        metadata.apply(file.into())
    }

    /// A hard link: its target is opened inside the root as any path is, and linked
    /// without following a symlink there (linkat(2) without AT_SYMLINK_FOLLOW), so it is
    /// a file of this layer, wherever the names on the way point.
    fn unpack_hard_link(&self, dir: &OwnedFd, name: &OsStr, target: &[u8]) -> Result<()> {
        let shown = show(target);
        let (target_parent, target_name) = split(target)
            .with_context(|| format!("the hard link's target `{shown}`"))?
            .with_context(|| format!("the hard link's target `{shown}` is the layer's root"))?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let target_dir = self
            .root
            .open_in_root(target_parent, flags, Mode::empty())
            .with_context(|| format!("the hard link's target `{shown}` is not in the layer"))?;
        replacing(dir, name, || linkat(&target_dir, target_name, dir, name, AtFlags::empty()))
            .with_context(|| format!("link to `{shown}`"))
    }

    /// A whiteout: a 0/0 character device of the hidden name, or the opaque xattr on the
    /// directory. A file this layer made of the same name stays: a whiteout hides only the
    /// layers below (image-spec, layer.md).
    // ANCHOR: unpack_whiteout
    fn unpack_whiteout(&self, parent: &Path, whiteout: Whiteout) -> Result<()> {
        // EXERCISE 6.1: turn the OCI whiteout into overlayfs's: a 0/0 character device named after the hidden file, or the opaque xattr on the directory
        // See Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories";
        // open_parent and open_dir give the directory inside the layer.
        match whiteout {
            Whiteout::Name(hidden) => {
                let dir = self.open_parent(parent)?;
                match mknodat(&dir, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(err) => Err(err).context("make the whiteout (a 0/0 character device)"),
                }
            }
            Whiteout::Opaque => {
                let dir = File::from(self.open_dir(parent)?);
                dir.set_xattr(OVERLAY_OPAQUE, b"y")
                    .with_context(|| format!("set {OVERLAY_OPAQUE} (needs root)"))
            }
        }
        // END EXERCISE
    }
    // ANCHOR_END: unpack_whiteout

    /// Sets the times of the directories, now that nothing more is written in them. A
    /// directory that a later entry replaced is skipped.
    fn set_dir_times(&self) -> Result<()> {
        for (path, mtime) in &self.dirs {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            let dir = match self.root.open_in_root(path, flags, Mode::empty()) {
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
                result => {
                    result.with_context(|| format!("open the directory /{}", path.display()))?
                }
            };
            futimens(&dir, mtime, mtime)
                .with_context(|| format!("set the mtime of /{}", path.display()))?;
        }
        Ok(())
    }
}

/// The target of a symlink or hard link entry.
fn link_name<'a>(entry: &'a Entry<impl Read>) -> Result<std::borrow::Cow<'a, [u8]>> {
    entry.link_name_bytes().context("the link has no target")
}

/// The file type and device number of a device or fifo entry.
fn node(entry: &Entry<impl Read>, kind: EntryType) -> Result<(SFlag, u64)> {
    let header = entry.header();
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    let kind = match kind {
        EntryType::Char => SFlag::S_IFCHR,
        EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    Ok((kind, makedev(major.into(), minor.into())))
}

/// Makes the directory `name` in `dir` and opens it; a directory already there is kept
/// (tar merges them), anything else there is replaced.
fn make_dir(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd> {
    let mode = Mode::from_bits_truncate(0o700);
    match mkdirat(dir, name, mode) {
        Err(Errno::EEXIST) if !is_dir(dir, name)? => {
            remove(dir, name)?;
            mkdirat(dir, name, mode)
        }
        Err(Errno::EEXIST) => Ok(()),
        result => result,
    }
    .context("make the directory")?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::empty()).context("open the directory")
}

/// Runs `make`, which makes `name` in `dir`; when an earlier entry made that name (a
/// symlink, then a file of the same name), removes it first, without following it.
fn replacing<T>(dir: &OwnedFd, name: &OsStr, make: impl Fn() -> nix::Result<T>) -> Result<T> {
    match make() {
        Err(Errno::EEXIST) => {
            remove(dir, name)?;
            Ok(make()?)
        }
        result => Ok(result?),
    }
}

/// Whether `name` in `dir` is a directory (and not a symlink to one).
fn is_dir(dir: &OwnedFd, name: &OsStr) -> Result<bool> {
    let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .with_context(|| format!("stat {}", name.display()))?;
    Ok(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// Removes `name` from `dir`, and all of it if it is a directory.
pub(crate) fn remove(dir: &impl AsFd, name: &OsStr) -> Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        // unlink(2): EISDIR is Linux's answer for a directory.
        Err(Errno::EISDIR) => remove_tree(dir, name),
        result => result.with_context(|| format!("remove {}", name.display())),
    }
}

/// Removes the directory `name` in `dir` and everything in it, without following a
/// symlink. Each directory is first made writable by its owner, so that a mode such as
/// 0500 (which tar keeps) stops no one but root from removing what is in it.
fn remove_tree(parent: &impl AsFd, name: &OsStr) -> Result<()> {
    fchmodat(parent, name, Mode::S_IRWXU, FchmodatFlags::FollowSymlink)
        .with_context(|| format!("chmod {} to remove it", name.display()))?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = openat(parent, name, flags, Mode::empty())
        .with_context(|| format!("open {} to remove it", name.display()))?;
    let mut listing = Dir::from_fd(dir.try_clone()?)?;
    let mut entries = Vec::new();
    for entry in listing.iter() {
        let entry = entry.with_context(|| format!("list {}", name.display()))?;
        let entry_name = OsStr::from_bytes(entry.file_name().to_bytes());
        if entry_name != "." && entry_name != ".." {
            entries.push((entry_name.to_os_string(), entry.file_type()));
        }
    }
    for (entry_name, kind) in entries {
        match kind {
            Some(Type::Directory) => remove_tree(&dir, &entry_name)?,
            _ => remove(&dir, &entry_name)?,
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
        .with_context(|| format!("remove the directory {}", name.display()))
}
