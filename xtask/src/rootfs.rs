//! `cargo xtask rootfs`: the default rootfs, a static busybox with a link for every applet.
//! The tests, the demo and the book all use this one function.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::host_tools::apt_install;
use crate::{build_in_place, project_root};

/// Where the default rootfs lives: a gitignored folder of the project.
pub fn default_rootfs_dir() -> PathBuf {
    project_root().join(".crabbox/rootfs/busybox")
}

/// Returns the default rootfs, building it first when it is missing (whole or not at all:
/// see [`build_in_place`]).
pub fn ensure_default_rootfs() -> Result<PathBuf> {
    let dir = default_rootfs_dir();
    build_in_place(&dir, |staging| build_rootfs(staging, &find_static_busybox()?))?;
    Ok(dir)
}

fn build_rootfs(dir: &Path, busybox: &Path) -> Result<()> {
    for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "etc", "proc", "sys", "root", "tmp"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {sub} in the rootfs"))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700))?;
    fs::copy(busybox, dir.join("bin/busybox"))
        .with_context(|| format!("copy {} into the rootfs", busybox.display()))?;
    for applet in busybox_applets(busybox)? {
        link_applet(dir, &applet)?;
    }
    for (name, contents) in ETC_FILES {
        fs::write(dir.join("etc").join(name), contents)?;
    }
    Ok(())
}

const ETC_FILES: &[(&str, &str)] = &[
    (
        "os-release",
        "NAME=\"crabbox busybox\"\nID=crabbox\nPRETTY_NAME=\"crabbox busybox rootfs\"\n",
    ),
    ("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
    ("group", "root:x:0:\nnogroup:x:65534:\n"),
    // Mount points: a container on a network gets its own versions bind-mounted over them.
    ("hosts", "127.0.0.1\tlocalhost\n"),
    ("resolv.conf", ""),
];

/// The install paths of every applet, as `busybox --list-full` prints them (`usr/bin/env`).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let output = Command::new(busybox).arg("--list-full").output()?;
    let list = String::from_utf8(output.stdout).context("read busybox --list-full")?;
    Ok(list.lines().filter(|path| path.contains('/')).map(String::from).collect())
}

/// Links `path` (relative to the rootfs) to bin/busybox with a relative link, so the link is
/// right both inside the container and when looked at from the host.
fn link_applet(rootfs: &Path, path: &str) -> Result<()> {
    if path == "bin/busybox" {
        return Ok(());
    }
    let up = "../".repeat(path.matches('/').count());
    let link = rootfs.join(path);
    fs::create_dir_all(link.parent().expect("an applet path has a directory"))?;
    symlink(format!("{up}bin/busybox"), &link)
        .with_context(|| format!("link {} to busybox", link.display()))
}

/// The host's statically linked busybox; installs Debian's busybox-static when it is missing
/// and this is a Debian or Ubuntu machine where we are root.
pub fn find_static_busybox() -> Result<PathBuf> {
    if let Some(busybox) = find_static_busybox_quietly() {
        return Ok(busybox);
    }
    if apt_install(&["busybox-static"])? {
        if let Some(busybox) = find_static_busybox_quietly() {
            return Ok(busybox);
        }
    }
    bail!(
        "no statically linked busybox found; install it with \
         `sudo apt-get install busybox-static` (Debian, Ubuntu) or `sudo dnf install busybox` \
         (Fedora), then run `cargo xtask rootfs` again"
    )
}

/// The host's statically linked busybox, if it has one; installs nothing.
pub fn find_static_busybox_quietly() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file() && is_statically_linked(path))
}

/// ldd(1) says "not a dynamic executable" (or "statically linked") for a static binary.
fn is_statically_linked(path: &Path) -> bool {
    Command::new("ldd").arg(path).output().is_ok_and(|out| {
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        text.contains("not a dynamic executable") || text.contains("statically linked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applets_link_back_to_bin_busybox() {
        let dir = tempfile::tempdir().unwrap();
        link_applet(dir.path(), "usr/bin/env").unwrap();
        link_applet(dir.path(), "bin/ls").unwrap();
        let env_link = fs::read_link(dir.path().join("usr/bin/env")).unwrap();
        assert_eq!(env_link, Path::new("../../bin/busybox"));
        assert_eq!(fs::read_link(dir.path().join("bin/ls")).unwrap(), Path::new("../bin/busybox"));
    }
}
