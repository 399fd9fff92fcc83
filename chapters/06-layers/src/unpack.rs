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
    let kind = match kind {
        EntryType::Char => SFlag::S_IFCHR,
        EntryType::Block => SFlag::S_IFBLK,
        // A fifo has no device number, and some writers leave its fields empty.
        _ => return Ok((SFlag::S_IFIFO, 0)),
    };
    let header = entry.header();
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
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

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use tar::Header;

    use super::*;

    /// A tar built entry by entry, its names written as they are: the tar crate's builder
    /// refuses `..`, and a hostile layer is what these tests need.
    pub(crate) struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        pub(crate) fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }

        /// Appends an entry; a name or target past the 100 bytes of a header goes in a
        /// GNU long name (or long link) entry before it, as GNU tar writes it.
        pub(crate) fn entry(
            &mut self,
            kind: EntryType,
            path: &str,
            link: &str,
            data: &[u8],
            edit: impl FnOnce(&mut Header),
        ) -> &mut Tar {
            for (long, text) in [(EntryType::GNULongName, path), (EntryType::GNULongLink, link)] {
                if text.len() > 100 {
                    let mut header = Header::new_gnu();
                    set_name(&mut header.as_old_mut().name, "././@LongLink");
                    header.set_entry_type(long);
                    header.set_size(text.len() as u64 + 1);
                    header.set_cksum();
                    self.0.append(&header, [text.as_bytes(), b"\0"].concat().as_slice()).unwrap();
                }
            }
            let mut header = Header::new_gnu();
            set_name(&mut header.as_old_mut().name, path);
            set_name(&mut header.as_old_mut().linkname, link);
            header.set_entry_type(kind);
            header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            header.set_mtime(1_000_000_000);
            header.set_uid(0);
            header.set_gid(0);
            edit(&mut header);
            header.set_cksum();
            self.0.append(&header, data).unwrap();
            self
        }

        pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> &mut Tar {
            self.entry(EntryType::Regular, path, "", data, |_| {})
        }

        pub(crate) fn dir(&mut self, path: &str) -> &mut Tar {
            self.entry(EntryType::Directory, path, "", b"", |_| {})
        }

        pub(crate) fn symlink(&mut self, path: &str, target: &str) -> &mut Tar {
            self.entry(EntryType::Symlink, path, target, b"", |_| {})
        }

        pub(crate) fn hard_link(&mut self, path: &str, target: &str) -> &mut Tar {
            self.entry(EntryType::Link, path, target, b"", |_| {})
        }

        /// PAX records (`key=value`) for the next entry (POSIX pax(1), "pax Header Block").
        pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
            let mut data = Vec::new();
            for (key, value) in records {
                let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
                // The length counts its own digits: find the number that fits itself.
                let mut length = body.len() + 1;
                while length.to_string().len() + body.len() != length {
                    length += 1;
                }
                data.extend_from_slice(length.to_string().as_bytes());
                data.extend_from_slice(&body);
            }
            self.entry(EntryType::XHeader, "././@PaxHeader", "", &data, |_| {})
        }

        pub(crate) fn finish(&mut self) -> Vec<u8> {
            self.0.finish().unwrap();
            self.0.get_ref().clone()
        }
    }

    /// Writes `name` into a header field as it is, cut to the field.
    fn set_name(field: &mut [u8], name: &str) {
        let length = name.len().min(field.len());
        field[..length].copy_from_slice(&name.as_bytes()[..length]);
    }

    /// A layer's directory and, beside it, a sentinel directory with one file, `secret`,
    /// that no tar may reach. Under /var/tmp, on disk: the layer needs trusted.* and
    /// user.* xattrs, which tmpfs may not keep (user.* only from Linux 6.6 on).
    pub(crate) struct Fixture {
        _dir: tempfile::TempDir,
        pub(crate) dest: PathBuf,
        pub(crate) sentinel: PathBuf,
    }

    impl Fixture {
        pub(crate) fn new() -> Fixture {
            let dir = tempfile::Builder::new().prefix("crabbox-").tempdir_in("/var/tmp").unwrap();
            let dest = dir.path().join("layer");
            let sentinel = dir.path().join("sentinel");
            fs::create_dir(&dest).unwrap();
            fs::create_dir(&sentinel).unwrap();
            fs::write(sentinel.join("secret"), "secret").unwrap();
            Fixture { _dir: dir, dest, sentinel }
        }

        /// The sentinel's path as a string, for symlinks and names that aim at it.
        pub(crate) fn sentinel(&self) -> String {
            self.sentinel.to_str().unwrap().to_string()
        }

        /// Fails unless nothing beside the layer was written: the temp dir holds the layer
        /// and the sentinel, and the sentinel its secret, unchanged, with no other link.
        pub(crate) fn assert_untouched(&self) {
            let mut beside: Vec<_> = fs::read_dir(self.sentinel.parent().unwrap())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            beside.sort();
            assert_eq!(beside, ["layer", "sentinel"]);
            let inside: Vec<_> =
                fs::read_dir(&self.sentinel).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(inside, ["secret"]);
            let secret = self.sentinel.join("secret");
            assert_eq!(fs::read_to_string(&secret).unwrap(), "secret");
            assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
            assert_eq!(xattr::list(&self.sentinel).unwrap().count(), 0);
        }

        /// Unpacks `tar` into the layer, then checks nothing beside it was written.
        pub(crate) fn unpack(&self, tar: &[u8]) -> Result<()> {
            let result = unpack_layer(tar, &self.dest);
            self.assert_untouched();
            result
        }
    }

    /// Fails unless unpacking `tar` is refused with an error that names `entry` and says `why`.
    fn assert_refused(tar: &[u8], entry: &str, why: &str) {
        let fixture = Fixture::new();
        let err = format!("{:#}", fixture.unpack(tar).unwrap_err());
        assert!(err.contains(&format!("entry `{entry}`")) && err.contains(why), "{err}");
    }

    /// A file capability as setcap(8) writes it (linux/capability.h, VFS_CAP_REVISION_2
    /// with the effective bit): cap_net_raw (13), permitted and effective.
    const CAP_NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn files_directories_links_and_devices_are_kept_as_the_tar_says() {
        let fixture = Fixture::new();
        let tar = Tar::new()
            .entry(EntryType::Directory, "./", "", b"", |h| h.set_mode(0o750))
            .dir("usr/")
            .pax(&[
                ("SCHILY.xattr.security.capability", &CAP_NET_RAW),
                ("SCHILY.xattr.user.note", b"kept"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ])
            .entry(EntryType::Regular, "usr/bin/ping", "", b"#!ping", |h| h.set_mode(0o4755))
            .hard_link("usr/bin/ping6", "usr/bin/ping")
            .entry(EntryType::Regular, "home/user/notes", "", b"mine", |h| {
                h.set_uid(1000);
                h.set_gid(1001);
                h.set_mode(0o2640);
            })
            .entry(EntryType::Directory, "tmp/", "", b"", |h| h.set_mode(0o1777))
            .symlink("abs", "/nowhere/at/all")
            .entry(EntryType::Char, "dev/null", "", b"", |h| {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_mode(0o666);
            })
            .entry(EntryType::Fifo, "run/fifo", "", b"", |_| {})
            .finish();
        fixture.unpack(&tar).unwrap();
        let dest = &fixture.dest;
        let meta = |path: &str| fs::symlink_metadata(dest.join(path)).unwrap();

        assert_eq!(meta("").mode() & 0o7777, 0o750);
        let ping = meta("usr/bin/ping");
        assert_eq!((ping.mode() & 0o7777, ping.nlink(), ping.mtime()), (0o4755, 2, 1_000_000_000));
        assert_eq!(fs::read(dest.join("usr/bin/ping6")).unwrap(), b"#!ping");
        assert_eq!(meta("usr/bin/ping6").ino(), ping.ino());
        let xattr = |name| xattr::get(dest.join("usr/bin/ping"), name).unwrap();
        assert_eq!(xattr("security.capability").as_deref(), Some(&CAP_NET_RAW[..]));
        assert_eq!(xattr("user.note").as_deref(), Some(&b"kept"[..]));
        assert_eq!(xattr("trusted.overlay.redirect"), None);
        let notes = meta("home/user/notes");
        assert_eq!((notes.uid(), notes.gid(), notes.mode() & 0o7777), (1000, 1001, 0o2640));
        assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
        assert_eq!(meta("usr").mtime(), 1_000_000_000);
        assert_eq!(fs::read_link(dest.join("abs")).unwrap(), Path::new("/nowhere/at/all"));
        let null = meta("dev/null");
        assert!(null.file_type().is_char_device());
        assert_eq!((null.rdev(), null.mode() & 0o7777), (makedev(1, 3), 0o666));
        assert!(meta("run/fifo").file_type().is_fifo());
    }

    #[test]
    fn whiteouts_become_what_overlayfs_reads() {
        let fixture = Fixture::new();
        let tar = Tar::new()
            .file("etc/.wh.motd", b"")
            .dir("var/cache/")
            .file("var/cache/.wh..wh..opq", b"")
            .finish();
        fixture.unpack(&tar).unwrap();
        let motd = fs::symlink_metadata(fixture.dest.join("etc/motd")).unwrap();
        assert!(motd.file_type().is_char_device());
        assert_eq!(motd.rdev(), 0);
        let cache = fixture.dest.join("var/cache");
        assert_eq!(xattr::get(&cache, OVERLAY_OPAQUE).unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 0, "the opaque marker is no file");
    }

    #[test]
    fn a_whiteout_hides_nothing_of_its_own_layer() {
        let fixture = Fixture::new();
        fixture
            .unpack(&Tar::new().file("etc/motd", b"hello").file("etc/.wh.motd", b"").finish())
            .unwrap();
        assert_eq!(fs::read(fixture.dest.join("etc/motd")).unwrap(), b"hello");
    }

    #[test]
    fn an_entry_replaces_one_of_the_same_name_without_following_it() {
        let fixture = Fixture::new();
        let victim = format!("{}/victim", fixture.sentinel());
        let tar = Tar::new()
            .symlink("file", &victim)
            .file("file", b"a file now")
            .symlink("dir", &fixture.sentinel())
            .dir("dir/")
            .file("dir/inside", b"inside")
            .file("was-a-file", b"")
            .dir("was-a-file/")
            .symlink("dev", &fixture.sentinel())
            .entry(EntryType::Fifo, "dev", "", b"", |_| {})
            .finish();
        fixture.unpack(&tar).unwrap();
        let dest = &fixture.dest;
        assert_eq!(fs::read(dest.join("file")).unwrap(), b"a file now");
        assert_eq!(fs::read(dest.join("dir/inside")).unwrap(), b"inside");
        assert!(fs::symlink_metadata(dest.join("dir")).unwrap().is_dir());
        assert!(fs::symlink_metadata(dest.join("was-a-file")).unwrap().is_dir());
        assert!(fs::symlink_metadata(dest.join("dev")).unwrap().file_type().is_fifo());
    }

    #[test]
    fn dot_dot_is_refused() {
        for path in ["../x", "a/../../x", "a/..", "./../sentinel/secret"] {
            assert_refused(&Tar::new().file(path, b"out").finish(), path, "`..` is refused");
        }
    }

    // Every attack below aims at the sentinel, never at a host path such as /etc/passwd:
    // if extraction were broken, the test would fail without harming the machine.

    #[test]
    fn absolute_paths_stay_inside() {
        let fixture = Fixture::new();
        let secret = format!("{}/secret", fixture.sentinel());
        fixture.unpack(&Tar::new().file(&secret, b"overwritten").finish()).unwrap();
        let inside = fixture.dest.join(secret.trim_start_matches('/'));
        assert_eq!(fs::read(inside).unwrap(), b"overwritten");
    }

    #[test]
    fn a_parent_that_is_a_symlink_out_leads_back_inside() {
        let fixture = Fixture::new();
        let sentinel = fixture.sentinel();
        let tar = Tar::new()
            .symlink("abs", &sentinel)
            .symlink("rel", "../sentinel")
            .symlink("up", &format!("../../../../../../../..{sentinel}"))
            .symlink("chain", "rel/../sentinel")
            .file("abs/by-abs", b"x")
            .file("rel/by-rel", b"x")
            .file("up/by-up", b"x")
            .file("chain/deeper/by-chain", b"x")
            .finish();
        fixture.unpack(&tar).unwrap();
        let dest = &fixture.dest;
        let inside = dest.join(sentinel.trim_start_matches('/'));
        assert!(inside.join("by-abs").is_file());
        assert!(dest.join("sentinel/by-rel").is_file());
        assert!(inside.join("by-up").is_file());
        assert!(dest.join("sentinel/deeper/by-chain").is_file());
    }

    #[test]
    fn a_hard_link_to_outside_is_refused() {
        let secret = format!("{}/secret", Fixture::new().sentinel());
        assert_refused(&Tar::new().hard_link("link", &secret).finish(), "link", "not in the layer");
        let tar = Tar::new().hard_link("link", "../sentinel/secret").finish();
        assert_refused(&tar, "link", "`..` is refused");
    }

    #[test]
    fn a_hard_link_through_a_symlink_ends_inside() {
        let fixture = Fixture::new();
        let tar = Tar::new()
            .symlink("out", &fixture.sentinel())
            .symlink("secret-link", &format!("{}/secret", fixture.sentinel()))
            .symlink("real-link", "/real")
            .file("real/file", b"inside")
            .hard_link("through", "real-link/file")
            .hard_link("of-the-link", "secret-link")
            .finish();
        fixture.unpack(&tar).unwrap();
        let dest = &fixture.dest;
        let ino = |path: &str| fs::symlink_metadata(dest.join(path)).unwrap().ino();
        assert_eq!(ino("through"), ino("real/file"));
        // The link is to the symlink itself, which points out but is not followed.
        assert_eq!(ino("of-the-link"), ino("secret-link"));
        let err = fixture.unpack(&Tar::new().hard_link("x", "out/secret").finish()).unwrap_err();
        assert!(format!("{err:#}").contains("not in the layer"), "{err:#}");
    }

    #[test]
    fn whiteouts_of_dot_dot_are_refused_and_absolute_ones_stay_inside() {
        for (path, why) in [
            ("a/.wh..", "must name a file"),
            ("a/.wh...", "must name a file"),
            ("a/.wh.", "must name a file"),
            ("../sentinel/.wh.secret", "`..` is refused"),
            (".wh.etc/passwd", "named like a whiteout"),
        ] {
            assert_refused(&Tar::new().file(path, b"").finish(), path, why);
        }
        let fixture = Fixture::new();
        let tar = Tar::new()
            .file(&format!("{}/.wh.secret", fixture.sentinel()), b"")
            .symlink("out", &fixture.sentinel())
            .file("out/.wh..wh..opq", b"")
            .finish();
        fixture.unpack(&tar).unwrap();
        let inside = fixture.dest.join(fixture.sentinel().trim_start_matches('/'));
        assert!(fs::symlink_metadata(inside.join("secret")).unwrap().file_type().is_char_device());
        assert_eq!(xattr::get(&inside, OVERLAY_OPAQUE).unwrap().as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn long_names_resolve_as_short_ones() {
        let fixture = Fixture::new();
        let long_dir = "d".repeat(150);
        let long_target = format!("{}/{}", fixture.sentinel(), "t".repeat(120));
        let tar = Tar::new()
            .symlink("out", &fixture.sentinel())
            .file(&format!("out/{long_dir}/file"), b"long")
            .symlink("long-link", &long_target)
            .pax(&[("path", format!("out/{}/pax", "p".repeat(120)).as_bytes())])
            .file("short", b"pax")
            .finish();
        fixture.unpack(&tar).unwrap();
        let inside = fixture.dest.join(fixture.sentinel().trim_start_matches('/'));
        assert_eq!(fs::read(inside.join(&long_dir).join("file")).unwrap(), b"long");
        assert_eq!(fs::read_link(fixture.dest.join("long-link")).unwrap(), Path::new(&long_target));
        assert_eq!(fs::read(inside.join("p".repeat(120)).join("pax")).unwrap(), b"pax");
        assert!(!fixture.dest.join("short").exists(), "the PAX path replaces the header's");

        let escape = format!("a/{}/../../../sentinel/x", "b".repeat(120));
        assert_refused(&Tar::new().file(&escape, b"out").finish(), &escape, "`..` is refused");
    }

    #[test]
    fn the_names_unpacked_are_the_names_gnu_tar_lists() {
        let fixture = Fixture::new();
        let long = format!("{}/{}", "l".repeat(90), "m".repeat(90));
        let tar =
            Tar::new().file(&long, b"").pax(&[("path", b"pax/name")]).file("ignored", b"").finish();
        let mut gnu_tar = std::process::Command::new("tar")
            .args(["-tf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        gnu_tar.stdin.take().unwrap().write_all(&tar).unwrap();
        let listed = String::from_utf8(gnu_tar.wait_with_output().unwrap().stdout).unwrap();
        fixture.unpack(&tar).unwrap();
        for name in listed.lines() {
            assert!(fixture.dest.join(name).is_file(), "GNU tar lists {name}, not unpacked");
        }
        assert_eq!(listed.lines().count(), 2, "{listed}");
    }

    #[test]
    fn a_tree_with_odd_modes_is_removed_without_following_symlinks() {
        let fixture = Fixture::new();
        let tar = Tar::new()
            .entry(EntryType::Directory, "locked/", "", b"", |h| h.set_mode(0))
            .entry(EntryType::Regular, "locked/file", "", b"x", |h| h.set_mode(0))
            .symlink("locked/out", &fixture.sentinel())
            .finish();
        fixture.unpack(&tar).unwrap();
        fs::set_permissions(&fixture.dest, fs::Permissions::from_mode(0o000)).unwrap();
        let parent = File::open(fixture.dest.parent().unwrap()).unwrap();
        remove(&parent, OsStr::new("layer")).unwrap();
        assert!(!fixture.dest.exists());
        fs::create_dir(&fixture.dest).unwrap();
        fixture.assert_untouched();
    }
}
