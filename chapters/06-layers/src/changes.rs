//! What a container changed: its overlayfs upper directory, read as `docker diff` reads it
//! and written as an OCI layer for `commit`.
//!
//! overlayfs records every change in the upper directory
//! (the kernel's Documentation/filesystems/overlayfs.rst):
//! - a file or directory written is there whole: new, or copied up from a lower layer;
//! - a name deleted that a lower layer has is a *whiteout*, a character device 0/0;
//! - a directory deleted and made again is *opaque* (xattr `trusted.overlay.opaque` = `y`):
//!   nothing the lower layers have under it shows through.
//!
//! overlayfs also keeps xattrs of its own there: `trusted.overlay.origin` and `impure` are
//! bookkeeping for inode numbers and readdir and say nothing about content. Two others would
//! mean the upper holds only part of a change, the rest staying in a lower layer:
//! `trusted.overlay.redirect` (a directory renamed, with `redirect_dir=on`) and
//! `trusted.overlay.metacopy` (an owner or mode changed without copying the data, with
//! `metacopy=on`). Both features are off unless the mount or the module turns them on
//! (`/sys/module/overlay/parameters/redirect_dir` and `metacopy` say `N`), and then a rename
//! of a lower directory fails with EXDEV and `mv` copies instead. An upper that has either
//! xattr is refused, rather than read as if it were complete.
//!
//! The upper belongs to the container and may change while it is read, so it is walked by
//! file descriptor: every name is looked at in its opened parent without following it, and
//! a directory is opened with O_NOFOLLOW, so a symlink never leads the walk anywhere.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, major, minor, FileStat, Mode, SFlag};
use tar::{Builder, EntryType, Header};
use xattr::FileExt;

use crate::digest::{Digest, Hashing};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const REDIRECT_XATTR: &str = "trusted.overlay.redirect";
const METACOPY_XATTR: &str = "trusted.overlay.metacopy";
/// File capabilities (capabilities(7)): the one xattr an image carries, as docker does.
const CAPABILITY_XATTR: &str = "security.capability";
/// How an OCI layer says "deleted" (image-spec layer.md, Whiteouts): `.wh.NAME`, and
/// `DIR/.wh..wh..opq` for "nothing below DIR shows through".
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What happened to a path, as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

/// One line of `docker diff`: `C /etc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// The path in the container, absolute.
    pub path: PathBuf,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let letter = match self.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        };
        write!(f, "{letter} {}", self.path.display())
    }
}

// ANCHOR: changes
/// What the container whose upper directory is `upper` changed in the image made of
/// `lowers` (bottom first), sorted by path:
/// - a name in the upper is C when the image has it, A when not;
/// - a whiteout is D, when the image has the name it hides;
/// - a directory that holds changes is in the upper, so it is C (or A), as docker lists it;
/// - an opaque directory is C (A if new), and what the image has under it that the upper
///   does not is D (the upper's entries under it are A or C like any other).
///
/// For an opaque directory this is what comparing the image's tree with the container's
/// gives. Docker's overlay2 driver (moby's `OverlayChanges`) reads the upper alone and
/// prints `D` for an opaque directory the image has, a directory gone that is still there,
/// and nothing for what it hid.
///
/// The image is `lowers` merged as overlayfs merges them: a name in a higher layer hides
/// the same name below, a whiteout hides it altogether, and an opaque directory hides what
/// the layers below have under it.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let top_first = lowers.iter().rev().cloned().collect();
    // What the image has at each directory of the upper met so far, from the root down.
    let mut below_dirs = HashMap::from([(PathBuf::new(), Below::Dir(top_first))]);
    let mut changes = Vec::new();
    walk_upper(upper, &mut |entry| {
        let parent = entry.path.parent().unwrap_or(Path::new(""));
        let below = match below_dirs.get(parent) {
            Some(Below::Dir(dirs)) => merged_entry(dirs, entry.name)?,
            _ => Below::Missing,
        };
        let path = Path::new("/").join(entry.path);
        let in_image = below != Below::Missing;
        match &entry.upper {
            Upper::Whiteout if in_image => changes.push(Change::new(ChangeKind::Deleted, path)),
            Upper::Whiteout => {}
            upper => {
                let kind = if in_image { ChangeKind::Changed } else { ChangeKind::Added };
                if let Upper::Dir { dir, opaque } = upper {
                    if *opaque {
                        for name in names_below(&below)? {
                            if !has_name(dir, &name)? {
                                changes.push(Change::new(ChangeKind::Deleted, path.join(name)));
                            }
                        }
                    }
                    below_dirs.insert(entry.path.to_path_buf(), below);
                }
                changes.push(Change::new(kind, path));
            }
        }
        Ok(())
    })
    .with_context(|| format!("list the changes in {}", upper.display()))?;
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(changes)
}
// ANCHOR_END: changes

impl Change {
    /// A change of `kind` at `path`, absolute in the container.
    fn new(kind: ChangeKind, path: PathBuf) -> Change {
        Change { kind, path }
    }
}

/// Whether the directory `dir` has an entry `name`, of any kind.
fn has_name(dir: &File, name: &OsStr) -> Result<bool> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(err) => Err(err).with_context(|| format!("look for {}", name.display())),
    }
}

/// What the image has at a path. Its layers are the store's, unpacked and read-only, so
/// they are read by path; each path is a directory looked at with lstat first, so no
/// symlink is followed.
#[derive(Debug, PartialEq)]
enum Below {
    Missing,
    NotDir,
    /// A directory, and the layers' directories that are merged into it, top first.
    Dir(Vec<PathBuf>),
}

/// The names the image shows in a directory, none when it is no directory.
fn names_below(below: &Below) -> Result<BTreeSet<OsString>> {
    let Below::Dir(dirs) = below else { return Ok(BTreeSet::new()) };
    let mut names = BTreeSet::new();
    for dir in dirs {
        for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let name = entry.with_context(|| format!("read {}", dir.display()))?.file_name();
            if !names.contains(&name) && merged_entry(dirs, &name)? != Below::Missing {
                names.insert(name);
            }
        }
    }
    Ok(names)
}

/// What `name` is in the directory that `dirs` (top first) merge into: the topmost layer
/// that has the name decides. When that is a directory, the directories of the same name
/// below it merge in, down to an opaque one or to a layer whose entry is not a directory.
fn merged_entry(dirs: &[PathBuf], name: &OsStr) -> Result<Below> {
    let mut merged = Vec::new();
    for dir in dirs {
        let path = dir.join(name);
        let Some(metadata) = lstat_if_present(&path)? else { continue };
        if !metadata.is_dir() {
            if !merged.is_empty() {
                break;
            }
            return Ok(if is_whiteout(&metadata) { Below::Missing } else { Below::NotDir });
        }
        let opaque = xattr::get(&path, OPAQUE_XATTR)
            .with_context(|| format!("read {OPAQUE_XATTR} of {}", path.display()))?
            .is_some_and(|value| value == b"y");
        merged.push(path);
        if opaque {
            break;
        }
    }
    Ok(if merged.is_empty() { Below::Missing } else { Below::Dir(merged) })
}

/// lstat(2) of `path`, `None` when nothing is there.
fn lstat_if_present(path: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("lstat {}", path.display())),
    }
}

/// An overlayfs whiteout: a character device with device number 0/0.
fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

/// What overlayfs made of one name in the upper directory.
enum Upper {
    /// A character device 0/0: the name is deleted.
    Whiteout,
    /// A directory, opened; `opaque` when nothing below it shows through.
    Dir { dir: File, opaque: bool },
    /// A file, symlink, device, fifo or socket, new or copied up.
    Other,
}

/// One name met in the walk of an upper directory.
struct UpperEntry<'a> {
    /// The path relative to the upper directory, e.g. `etc/passwd`.
    path: &'a Path,
    /// The opened directory that holds the entry, and its name there: the entry is opened
    /// from its parent, never by a path.
    parent: &'a File,
    name: &'a OsStr,
    /// As lstat(2) saw it.
    stat: FileStat,
    upper: Upper,
}

/// Calls `visit` for every name in the directory `upper`, a directory before what it holds,
/// in the order of their paths (sorted by name in each directory).
fn walk_upper(upper: &Path, visit: &mut dyn FnMut(&UpperEntry) -> Result<()>) -> Result<()> {
    let root = open_dir(AT_FDCWD, upper.as_os_str())
        .with_context(|| format!("open {}", upper.display()))?;
    walk_dir(&root, Path::new(""), visit)
}

fn walk_dir(
    dir: &File,
    path: &Path,
    visit: &mut dyn FnMut(&UpperEntry) -> Result<()>,
) -> Result<()> {
    for name in sorted_names(dir).with_context(|| format!("read /{}", path.display()))? {
        let path = path.join(&name);
        let entry =
            upper_entry(dir, &name, &path).with_context(|| format!("/{}", path.display()))?;
        visit(&entry)?;
        if let Upper::Dir { dir, .. } = &entry.upper {
            walk_dir(dir, &path, visit)?;
        }
    }
    Ok(())
}

/// Looks at `name` in `parent` without following it, and opens it if it is a directory.
fn upper_entry<'a>(parent: &'a File, name: &'a OsStr, path: &'a Path) -> Result<UpperEntry<'a>> {
    let stat = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).context("lstat")?;
    let upper = match file_type(&stat) {
        SFlag::S_IFCHR if stat.st_rdev == 0 => Upper::Whiteout,
        SFlag::S_IFDIR => {
            let dir = open_dir(parent, name).context("open the directory")?;
            if dir.get_xattr(REDIRECT_XATTR)?.is_some() {
                bail!(
                    "the directory was renamed with overlayfs's redirect_dir on \
                     ({REDIRECT_XATTR}), so part of it is still in a lower layer; \
                     mount the container with redirect_dir=off"
                );
            }
            let opaque = dir.get_xattr(OPAQUE_XATTR)?.is_some_and(|value| value == b"y");
            Upper::Dir { dir, opaque }
        }
        _ => Upper::Other,
    };
    Ok(UpperEntry { path, parent, name, stat, upper })
}

/// Opens the directory `name` in `parent`, refusing a symlink.
fn open_dir(parent: impl std::os::fd::AsFd, name: &OsStr) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(parent, name, flags, Mode::empty()).map(File::from)
}

/// The names in `dir`, without `.` and `..`, sorted.
fn sorted_names(dir: &File) -> nix::Result<Vec<OsString>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut listing = Dir::openat(dir, ".", flags, Mode::empty())?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from(OsStr::from_bytes(&name)));
        }
    }
    names.sort();
    Ok(names)
}

/// The S_IFMT bits of a stat: what kind of file it is (inode(7)).
fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

// ANCHOR: write_layer
/// Writes the upper directory `upper` to `out` as an OCI layer, an uncompressed tar, and
/// returns its digest (the layer's diff id) and size. overlayfs's whiteouts become OCI's:
/// a 0/0 character device `NAME` becomes an empty file `.wh.NAME`, and an opaque directory
/// gets an empty `DIR/.wh..wh..opq` after its own entry. Owners, modes, mtimes, symlinks,
/// hard links, devices and `security.capability` are kept; no other xattr is written (so
/// none of overlayfs's `trusted.overlay.*`), and sockets are left out, as docker does.
/// Entries are in the order of their paths, so the same upper gives the same diff id.
///
/// The container must not run meanwhile (docker pauses it to commit): a file that changes
/// while it is read is an error.
pub fn write_layer(upper: &Path, out: impl Write) -> Result<(Digest, u64)> {
    let mut tar = Builder::new(Hashing::new(out));
    let mut written = HashMap::new();
    walk_upper(upper, &mut |entry| append_entry(&mut tar, &mut written, entry))
        .with_context(|| format!("write {} as a layer", upper.display()))?;
    let mut hashing = tar.into_inner().context("finish the layer's tar")?;
    hashing.flush().context("write the layer's tar")?;
    let (digest, size, _) = hashing.finish();
    Ok((digest, size))
}
// ANCHOR_END: write_layer

/// Where each inode with more than one link was first written: (st_dev, st_ino) → path.
type FirstLinks = HashMap<(u64, u64), PathBuf>;

/// Appends one entry of the upper directory, as OCI wants it.
fn append_entry<W: Write>(
    tar: &mut Builder<W>,
    written: &mut FirstLinks,
    entry: &UpperEntry,
) -> Result<()> {
    if entry.name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
        bail!(
            "/{}: a name that begins with {WHITEOUT_PREFIX} means a whiteout in an OCI layer, \
             so this entry cannot be committed; rename or remove it in the container",
            entry.path.display()
        );
    }
    let mut header = header_from(&entry.stat);
    let appended = match &entry.upper {
        Upper::Whiteout => append_whiteout(tar, header, entry.path),
        Upper::Dir { opaque, .. } => {
            header.set_entry_type(EntryType::Directory);
            tar.append_data(&mut header, entry.path, io::empty())?;
            if *opaque {
                append_opaque_marker(tar, &entry.stat, entry.path)?;
            }
            Ok(())
        }
        Upper::Other => append_non_dir(tar, written, header, entry),
    };
    appended.with_context(|| format!("/{}", entry.path.display()))
}

/// A header with the entry's owner, permission bits and mtime, and no data.
fn header_from(stat: &FileStat) -> Header {
    let mut header = Header::new_gnu();
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(stat.st_uid.into());
    header.set_gid(stat.st_gid.into());
    // tar has no mtimes before 1970.
    header.set_mtime(stat.st_mtime.try_into().unwrap_or(0));
    header.set_size(0);
    header
}

/// `.wh.NAME`: an empty regular file beside where NAME was.
fn append_whiteout<W: Write>(tar: &mut Builder<W>, mut header: Header, path: &Path) -> Result<()> {
    let name = path.file_name().context("a whiteout has a name")?;
    let mut whiteout = OsString::from(WHITEOUT_PREFIX);
    whiteout.push(name);
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o600);
    tar.append_data(&mut header, path.with_file_name(whiteout), io::empty())?;
    Ok(())
}

/// `DIR/.wh..wh..opq`: an empty file with the directory's owner and permission bits.
fn append_opaque_marker<W: Write>(tar: &mut Builder<W>, dir: &FileStat, path: &Path) -> Result<()> {
    let mut header = header_from(dir);
    header.set_entry_type(EntryType::Regular);
    header.set_mode(dir.st_mode & 0o777);
    tar.append_data(&mut header, path.join(OPAQUE_MARKER), io::empty())?;
    Ok(())
}

/// A file, symlink, device or fifo; a second name of an inode already written becomes a
/// hard link to the first, and a socket is skipped (tar cannot hold one).
fn append_non_dir<W: Write>(
    tar: &mut Builder<W>,
    written: &mut FirstLinks,
    mut header: Header,
    entry: &UpperEntry,
) -> Result<()> {
    let kind = file_type(&entry.stat);
    if kind == SFlag::S_IFSOCK {
        return Ok(());
    }
    if entry.stat.st_nlink > 1 {
        let inode = (entry.stat.st_dev, entry.stat.st_ino);
        if let Some(first) = written.get(&inode) {
            header.set_entry_type(EntryType::Link);
            tar.append_link(&mut header, entry.path, first)?;
            return Ok(());
        }
        written.insert(inode, entry.path.to_path_buf());
    }
    match kind {
        SFlag::S_IFREG => append_file(tar, entry)?,
        SFlag::S_IFLNK => {
            let target = readlinkat(entry.parent, entry.name).context("read the symlink")?;
            header.set_entry_type(EntryType::Symlink);
            tar.append_link(&mut header, entry.path, target)?;
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
            header.set_entry_type(match kind {
                SFlag::S_IFCHR => EntryType::Char,
                SFlag::S_IFBLK => EntryType::Block,
                _ => EntryType::Fifo,
            });
            header.set_device_major(major(entry.stat.st_rdev).try_into()?)?;
            header.set_device_minor(minor(entry.stat.st_rdev).try_into()?)?;
            tar.append_data(&mut header, entry.path, io::empty())?;
        }
        _ => bail!("unknown file type {:o}", kind.bits()),
    }
    Ok(())
}

/// A regular file, opened from its directory without following a symlink, with its
/// `security.capability` as a PAX `SCHILY.xattr.` record, the form GNU tar and docker use.
fn append_file<W: Write>(tar: &mut Builder<W>, entry: &UpperEntry) -> Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = File::from(openat(entry.parent, entry.name, flags, Mode::empty()).context("open")?);
    let stat = fstat(&file).context("fstat")?;
    if file_type(&stat) != SFlag::S_IFREG || stat.st_ino != entry.stat.st_ino {
        bail!("it changed while it was read: is the container still running?");
    }
    if file.get_xattr(METACOPY_XATTR)?.is_some() {
        bail!(
            "only its metadata was copied up (overlayfs's metacopy, {METACOPY_XATTR}), its \
             data is still in a lower layer; mount the container with metacopy=off"
        );
    }
    if let Some(capability) = file.get_xattr(CAPABILITY_XATTR)? {
        let key = format!("SCHILY.xattr.{CAPABILITY_XATTR}");
        tar.append_pax_extensions([(key.as_str(), capability.as_slice())])?;
    }
    let mut header = header_from(&stat);
    header.set_entry_type(EntryType::Regular);
    let size = u64::try_from(stat.st_size)?;
    header.set_size(size);
    tar.append_data(&mut header, entry.path, Exactly { data: file.take(size) })?;
    Ok(())
}

/// A file's data, exactly as long as its header says: a file that shrinks while it is read
/// would put the tar's next header in the wrong place, so that is an error instead.
struct Exactly<R> {
    data: io::Take<R>,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.data.read(buf)?;
        if read == 0 && !buf.is_empty() && self.data.limit() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read: is the container still running?",
            ));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sys::stat::{makedev, mknod};
    use nix::unistd::mkfifo;

    use super::*;

    /// A directory for the test under /var/tmp: trusted.* xattrs need a filesystem that
    /// keeps them, which a tmpfs /tmp may not.
    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("crabbox-").tempdir_in("/var/tmp").unwrap()
    }

    /// Makes `path` and its parents; a path ending in `/` is a directory, any other a file
    /// that holds its own name.
    fn make(root: &Path, paths: &[&str]) {
        for path in paths {
            let full = root.join(path);
            if path.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, path).unwrap();
            }
        }
    }

    fn whiteout(path: &Path) {
        mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    }

    fn set_opaque(dir: &Path) {
        xattr::set(dir, OPAQUE_XATTR, b"y").unwrap();
    }

    /// File capabilities as the kernel stores them (VFS_CAP_REVISION_2, capabilities(7)):
    /// CAP_NET_RAW permitted and effective.
    const NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// Two lower layers and an upper made by hand as overlayfs would make them.
    fn by_hand() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
        let dir = scratch();
        let (base, top, upper) =
            (dir.path().join("base"), dir.path().join("top"), dir.path().join("upper"));
        make(&base, &["bin/ls", "bin/sh", "etc/passwd", "etc/hosts", "var/cache/a", "var/cache/b"]);
        make(&base, &["opt/old/file", "srv/data/x"]);
        // The top lower layer deletes etc/hosts and replaces srv/data with an opaque copy.
        make(&top, &["etc/", "srv/data/y"]);
        whiteout(&top.join("etc/hosts"));
        set_opaque(&top.join("srv/data"));

        make(&upper, &["bin/", "etc/passwd", "etc/hosts", "var/cache/b", "var/cache/new"]);
        make(&upper, &["new/file", "srv/data/x"]);
        whiteout(&upper.join("bin/ls"));
        whiteout(&upper.join("opt"));
        // Nothing below has `ghost`: its whiteout hides nothing.
        whiteout(&upper.join("ghost"));
        set_opaque(&upper.join("var/cache"));
        xattr::set(upper.join("etc/passwd"), "trusted.overlay.origin", b"\0fake").unwrap();
        fs::hard_link(upper.join("new/file"), upper.join("new/link")).unwrap();
        mknod(
            &upper.join("new/null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
        mkfifo(&upper.join("new/pipe"), Mode::from_bits_truncate(0o600)).unwrap();
        xattr::set(upper.join("new/file"), CAPABILITY_XATTR, &NET_RAW).unwrap();
        // Followed, this symlink would list the base layer's bin again under /new/sym.
        symlink("../../base/bin", upper.join("new/sym")).unwrap();
        (dir, upper, vec![base, top])
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::to_string).collect()
    }

    #[test]
    fn changes_are_listed_as_docker_diff_lists_them() {
        let (_dir, upper, lowers) = by_hand();
        let changes = changes(&upper, &lowers).unwrap();
        assert_eq!(
            lines(&changes),
            [
                "C /bin",
                "D /bin/ls",
                "C /etc",
                // Deleted by the top lower layer, so new to this container.
                "A /etc/hosts",
                "C /etc/passwd",
                "A /new",
                "A /new/file",
                "A /new/link",
                "A /new/null",
                "A /new/pipe",
                "A /new/sym",
                "D /opt",
                "C /srv",
                "C /srv/data",
                // Hidden by the top layer's opaque srv/data, so new here too.
                "A /srv/data/x",
                "C /var",
                "C /var/cache",
                "D /var/cache/a",
                "C /var/cache/b",
                "A /var/cache/new",
            ]
        );
    }

    #[test]
    fn a_change_prints_as_docker_prints_it() {
        let change = Change::new(ChangeKind::Deleted, PathBuf::from("/bin/ls"));
        assert_eq!(change.to_string(), "D /bin/ls");
    }

    /// One entry of a tar, as a test looks at it.
    #[derive(Debug)]
    struct TarEntry {
        path: String,
        kind: EntryType,
        link: Option<String>,
        size: u64,
        device: Option<(u32, u32)>,
        /// The PAX records before it: key and value.
        pax: Vec<(String, Vec<u8>)>,
    }

    fn entries(tar: &[u8]) -> Vec<TarEntry> {
        let mut archive = tar::Archive::new(tar);
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let pax = match entry.pax_extensions().unwrap() {
                Some(records) => records
                    .map(|record| {
                        let record = record.unwrap();
                        (record.key().unwrap().to_string(), record.value_bytes().to_vec())
                    })
                    .collect(),
                None => Vec::new(),
            };
            let header = entry.header();
            entries.push(TarEntry {
                path: entry.path().unwrap().display().to_string(),
                kind: header.entry_type(),
                link: header.link_name().unwrap().map(|link| link.display().to_string()),
                size: header.size().unwrap(),
                device: matches!(header.entry_type(), EntryType::Char | EntryType::Block)
                    .then(|| (header.device_major().unwrap(), header.device_minor().unwrap()))
                    .and_then(|(major, minor)| major.zip(minor)),
                pax,
            });
        }
        entries
    }

    #[test]
    fn the_layer_has_oci_whiteouts_hard_links_and_capabilities() {
        let (_dir, upper, _) = by_hand();
        let mut tar = Vec::new();
        let (digest, size) = write_layer(&upper, &mut tar).unwrap();
        assert_eq!((digest, size), (Digest::of_bytes(&tar), tar.len() as u64));

        let entries = entries(&tar);
        let paths: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/.wh.ls",
                "etc",
                "etc/hosts",
                "etc/passwd",
                ".wh.ghost",
                "new",
                "new/file",
                "new/link",
                "new/null",
                "new/pipe",
                "new/sym",
                ".wh.opt",
                "srv",
                "srv/data",
                "srv/data/x",
                "var",
                "var/cache",
                "var/cache/.wh..wh..opq",
                "var/cache/b",
                "var/cache/new",
            ]
        );
        let entry = |path: &str| entries.iter().find(|entry| entry.path == path).unwrap();
        for empty in ["bin/.wh.ls", ".wh.opt", "var/cache/.wh..wh..opq"] {
            assert_eq!((entry(empty).kind, entry(empty).size), (EntryType::Regular, 0), "{empty}");
        }
        assert_eq!(entry("new/link").kind, EntryType::Link);
        assert_eq!(entry("new/link").link.as_deref(), Some("new/file"));
        assert_eq!(entry("new/null").kind, EntryType::Char);
        assert_eq!(entry("new/null").device, Some((1, 3)));
        assert_eq!(entry("new/pipe").kind, EntryType::Fifo);
        assert_eq!(entry("new/sym").kind, EntryType::Symlink);
        assert_eq!(entry("new/sym").link.as_deref(), Some("../../base/bin"));
        assert_eq!(entry("etc/passwd").size, "etc/passwd".len() as u64);
        let capability = ("SCHILY.xattr.security.capability".to_string(), NET_RAW.to_vec());
        assert_eq!(entry("new/file").pax, [capability]);
        let records: Vec<&String> =
            entries.iter().flat_map(|entry| &entry.pax).map(|(key, _)| key).collect();
        assert!(records.iter().all(|key| !key.contains("trusted.")), "{records:?}");
    }

    #[test]
    fn the_same_upper_gives_the_same_diff_id() {
        let (_dir, upper, _) = by_hand();
        let first = write_layer(&upper, io::sink()).unwrap();
        assert_eq!(write_layer(&upper, io::sink()).unwrap(), first);
    }

    #[test]
    fn a_name_that_would_read_as_a_whiteout_is_refused() {
        let (_dir, upper, _) = by_hand();
        make(&upper, &["etc/.wh.passwd"]);
        let err = write_layer(&upper, io::sink()).unwrap_err();
        assert!(
            format!("{err:#}").contains("/etc/.wh.passwd: a name that begins with .wh."),
            "{err:#}"
        );
    }

    #[test]
    fn a_redirected_directory_is_refused() {
        let (_dir, upper, lowers) = by_hand();
        xattr::set(upper.join("new"), REDIRECT_XATTR, b"/old").unwrap();
        let err = changes(&upper, &lowers).unwrap_err();
        assert!(format!("{err:#}").contains("redirect_dir=off"), "{err:#}");
    }

    /// An overlay mount, unmounted when dropped, also when the test fails.
    struct Overlay<'a>(&'a Path);

    impl Drop for Overlay<'_> {
        fn drop(&mut self) {
            // A busy mount is detached instead; a panic here would abort the test run.
            let unmounted = umount2(self.0, MntFlags::empty())
                .or_else(|_| umount2(self.0, MntFlags::MNT_DETACH));
            if let Err(err) = unmounted {
                eprintln!("unmount {}: {err}", self.0.display());
            }
        }
    }

    #[test]
    fn changes_made_through_a_real_overlay_are_what_docker_diff_shows() {
        let dir = scratch();
        let [lower, upper, work, merged] =
            ["lower", "upper", "work", "merged"].map(|name| dir.path().join(name));
        make(&lower, &["bin/ls", "bin/sh", "etc/passwd", "var/cache/a", "var/cache/b"]);
        for empty in [&upper, &work, &merged] {
            fs::create_dir(empty).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        mount(Some("overlay"), &merged, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
            .unwrap();
        let overlay = Overlay(&merged);

        fs::write(merged.join("new.txt"), "new").unwrap();
        fs::write(merged.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::remove_file(merged.join("bin/ls")).unwrap();
        fs::remove_dir_all(merged.join("var/cache")).unwrap();
        make(&merged, &["var/cache/b"]);
        drop(overlay);

        let opaque = xattr::get(upper.join("var/cache"), OPAQUE_XATTR).unwrap();
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]), "rm -rf and mkdir make an opaque dir");
        assert_eq!(
            lines(&changes(&upper, &[lower]).unwrap()),
            [
                "C /bin",
                "D /bin/ls",
                "C /etc",
                "C /etc/passwd",
                "A /new.txt",
                "C /var",
                "C /var/cache",
                "D /var/cache/a",
                "C /var/cache/b",
            ]
        );
        let mut tar = Vec::new();
        write_layer(&upper, &mut tar).unwrap();
        let paths: Vec<String> = entries(&tar).into_iter().map(|entry| entry.path).collect();
        assert!(paths.contains(&"bin/.wh.ls".to_string()), "{paths:?}");
        assert!(paths.contains(&"var/cache/.wh..wh..opq".to_string()), "{paths:?}");
    }
}
