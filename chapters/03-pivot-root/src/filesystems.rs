//! The filesystems every container expects: `/proc` for its PID namespace, a read-only
//! `/sys`, and a small `/dev` with only the standard devices.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// The flags for filesystems that hold no programs, setuid files or devices.
pub const NO_EXEC_SUID_DEV: MsFlags =
    MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// Mounts a filesystem of type `fstype` on `target` (inside the new root), creating the
/// directory when the rootfs lacks it.
/// Creates the directories /proc, /sys and /dev are mounted on, when the rootfs lacks them.
/// Run before the rootfs is made read-only: after that, nothing can be created in it.
pub fn create_filesystem_mount_points(rootfs: &Path) -> Result<()> {
    for dir in ["proc", "sys", "dev"] {
        let target = rootfs.join(dir);
        if target.symlink_metadata().is_err() {
            fs::create_dir(&target).with_context(|| format!("create {}", target.display()))?;
        }
    }
    Ok(())
}

fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    if Path::new(target).symlink_metadata().is_ok_and(|meta| !meta.is_dir()) {
        bail!("cannot mount {fstype} on {target}: in this rootfs {target} is not a directory");
    }
    fs::create_dir_all(target).with_context(|| format!("create {target} for {fstype}"))?;
    mount(Some(fstype), target, Some(fstype), flags, data)
        .with_context(|| format!("mount {fstype} on {target}"))
}

// ANCHOR: mount_proc
/// A new proc filesystem: it shows the PID namespace of the process that mounts it.
pub fn mount_proc() -> Result<()> {
    // EXERCISE 3.3: mount a new `proc` filesystem on /proc (nosuid, nodev, noexec)
    mount_fs("proc", "/proc", NO_EXEC_SUID_DEV, None)
    // END EXERCISE
}
// ANCHOR_END: mount_proc

/// sysfs, read-only: the container may look at the kernel's devices, not reconfigure them.
pub fn mount_sys() -> Result<()> {
    mount_fs("sysfs", "/sys", NO_EXEC_SUID_DEV | MsFlags::MS_RDONLY, None)
}

// ANCHOR: devices
/// The device nodes a program may expect: (name, major, minor). See devices.txt in the
/// kernel's documentation.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Links into /proc and /dev/pts that programs and shells rely on.
const LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];
// ANCHOR_END: devices

// ANCHOR: mount_dev
/// A tmpfs on /dev holding only the standard devices, a new devpts instance, /dev/shm and
/// /dev/mqueue: none of the host's disks or terminals.
pub fn mount_dev() -> Result<()> {
    // EXERCISE 3.4: mount a tmpfs on /dev, create DEVICES (mode 0666) and LINKS, then mount devpts on /dev/pts, a tmpfs on /dev/shm and mqueue on /dev/mqueue
    mount_fs(
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=64k"),
    )?;
    for (name, major, minor) in DEVICES {
        let path = Path::new("/dev").join(name);
        mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor))
            .with_context(|| format!("create device {}", path.display()))?;
        // mknod(2) applies the umask; a device that only root can write would break programs.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .with_context(|| format!("make {} readable and writable", path.display()))?;
    }
    for (name, target) in LINKS {
        symlink(target, Path::new("/dev").join(name))
            .with_context(|| format!("link /dev/{name}"))?;
    }
    // See devpts(5) on newinstance: its own pty numbers, not the host's terminals.
    let pts_options = "newinstance,ptmxmode=0666,mode=0620";
    mount_fs("devpts", "/dev/pts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some(pts_options))?;
    mount_fs("tmpfs", "/dev/shm", NO_EXEC_SUID_DEV, Some("mode=1777,size=64m"))?;
    // mqueue shows the POSIX message queues of the IPC namespace of whoever mounts it.
    mount_fs("mqueue", "/dev/mqueue", NO_EXEC_SUID_DEV, None)
    // END EXERCISE
}
// ANCHOR_END: mount_dev
