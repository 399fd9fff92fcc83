//! Paths that come from an image, resolved inside the image. A layer's tar and a
//! container's rootfs may hold `etc -> /` or `x -> ../../..`: joined to a host path as a
//! string, such a path leads out of the container and onto the host. Here every path is
//! resolved with the directory as `/`, as the kernel would resolve it after pivot_root.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use ch03_pivot_root::volumes::MountPoints;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

/// The kernel's limit on symlinks followed in one lookup (path_resolution(7)).
const MAX_SYMLINKS: u32 = 40;

/// A directory that is `/` for every path resolved in it: a layer or a container's root.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC);
        let fd = openat2(nix::fcntl::AT_FDCWD, path, how)
            .with_context(|| format!("open {}", path.display()))?;
        Ok(Root { fd, path: path.to_path_buf() })
    }

    // ANCHOR: open_in_root
    /// Opens `path` as if the root were `/`: `..` stops at the root and a symlink, absolute
    /// or relative, is followed inside it (openat2(2), RESOLVE_IN_ROOT). /proc's magic
    /// links, which jump anywhere, are refused (RESOLVE_NO_MAGICLINKS).
    pub fn open_in_root(&self, path: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.fd.as_fd(), relative(path), how)
    }
    // ANCHOR_END: open_in_root

    // ANCHOR: resolve
    /// Resolves `path` inside the root to a path without symlinks, relative to the root.
    /// Components that do not exist yet are kept as they are (the caller creates them).
    pub fn resolve(&self, path: &Path) -> Result<PathBuf> {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: Vec<OsString> = components(path).into_iter().rev().collect();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(name);
            let Some(target) = self.symlink_target(&resolved)? else { continue };
            links += 1;
            if links > MAX_SYMLINKS {
                bail!("{}: too many levels of symbolic links", path.display());
            }
            // EXERCISE 6.4: follow the symlink inside the root: the link's name gives way to its target's components
            // See path_resolution(7): a relative target is read from the link's directory, an
            // absolute one from the root, and here the root is the container's, not the host's.
            resolved.pop();
            if target.is_absolute() {
                resolved.clear();
            }
            pending.extend(components(&target).into_iter().rev());
            // END EXERCISE
        }
        Ok(resolved.iter().collect())
    }
    // ANCHOR_END: resolve

    /// The target of `path` when it is a symlink, `None` when it is anything else or
    /// missing. Its parent has no symlinks, so nothing is followed on the way.
    fn symlink_target(&self, path: &[OsString]) -> Result<Option<PathBuf>> {
        let (name, parent) = path.split_last().expect("at least one component");
        let parent: PathBuf = parent.iter().collect();
        let Ok(dir) = self.open_in_root(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
        else {
            return Ok(None);
        };
        match fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat)
                if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK =>
            {
                let target = readlinkat(&dir, name.as_os_str()).with_context(|| {
                    format!("read the symlink /{}", parent.join(name).display())
                })?;
                Ok(Some(PathBuf::from(target)))
            }
            _ => Ok(None),
        }
    }

    /// Creates every missing directory of `path` inside the root, following its symlinks
    /// inside the root too, and returns the last one, opened.
    pub fn create_dir_all(&self, path: &Path) -> Result<OwnedFd> {
        let resolved = self.resolve(path)?;
        let mut dir =
            self.open_in_root(Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        for name in components(&resolved) {
            dir = open_or_create_dir(&dir, &name).with_context(|| {
                format!("create /{} in {}", resolved.display(), self.path.display())
            })?;
        }
        Ok(dir)
    }

    // ANCHOR: create_mount_point
    /// Creates what a bind mount of a directory (`dir`) or a file needs at `path`, inside
    /// the root, and returns the host path to mount on: a path free of symlinks, which the
    /// runtime alone can change until the container starts.
    pub fn create_mount_point(&self, path: &Path, dir: bool) -> Result<PathBuf> {
        let resolved = self.resolve(path)?;
        if dir {
            self.create_dir_all(&resolved)?;
        } else {
            let parent = resolved.parent().unwrap_or(Path::new(""));
            let parent_fd = self.create_dir_all(parent)?;
            let name = resolved.file_name().with_context(|| {
                format!("{} is the container's root, not a file", path.display())
            })?;
            let flags = OFlag::O_CREAT | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            nix::fcntl::openat(&parent_fd, name, flags, Mode::from_bits_truncate(0o644))
                .with_context(|| format!("create the mount point {}", path.display()))?;
        }
        Ok(self.path.join(resolved))
    }
    // ANCHOR_END: create_mount_point
}

/// Chapter 6's volumes: mount points resolved inside the container's root and created in
/// its own writable layer, never on the host through a symlink the image holds.
impl MountPoints for Root {
    fn create(&self, path: &Path, dir: bool) -> Result<PathBuf> {
        self.create_mount_point(path, dir)
    }
}

/// Opens the directory `name` in `dir`, creating it first when it is missing, and never
/// following a symlink (one that appeared since the path was resolved is refused).
fn open_or_create_dir(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {
            match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(err) => return Err(err),
            }
            nix::fcntl::openat(dir, name, flags, Mode::empty())
        }
        result => result,
    }
}

/// The normal components of `path`, without `/` and `.`; `..` is kept as "..".
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// `path` without its leading `/`, for the *at calls (an empty path is the root itself).
fn relative(path: &Path) -> &Path {
    let relative = path.strip_prefix("/").unwrap_or(path);
    if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn root_with_links() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/sub")).unwrap();
        symlink("/", dir.path().join("etc/up")).unwrap();
        symlink("../../../../..", dir.path().join("etc/sub/far")).unwrap();
        symlink("/tmp/x", dir.path().join("evil")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (_dir, root) = root_with_links();
        assert_eq!(root.resolve(Path::new("/etc/up/etc/hosts")).unwrap(), Path::new("etc/hosts"));
        assert_eq!(root.resolve(Path::new("etc/sub/far/a")).unwrap(), Path::new("a"));
        assert_eq!(root.resolve(Path::new("/../../x")).unwrap(), Path::new("x"));
        assert_eq!(root.resolve(Path::new("/evil/sub")).unwrap(), Path::new("tmp/x/sub"));
    }

    #[test]
    fn mount_points_are_created_inside_the_root() {
        let (dir, root) = root_with_links();
        let file = root.create_mount_point(Path::new("/evil/sub/file"), false).unwrap();
        assert_eq!(file, dir.path().join("tmp/x/sub/file"));
        assert!(file.is_file());
        let sub = root.create_mount_point(Path::new("/etc/up/data"), true).unwrap();
        assert_eq!(sub, dir.path().join("data"));
        assert!(sub.is_dir());
    }

    #[test]
    fn symlink_loops_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let err = root.resolve(Path::new("/a/x")).unwrap_err();
        assert!(format!("{err}").contains("too many levels"), "{err}");
    }
}
