//! The host programs a chapter's checks call (`nft`, `nsenter` …), installed from Debian's
//! packages when they are missing and we may, or asked for by name.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::rootfs::is_root;

/// Makes sure `program` is installed: installs Debian's `package` when it is missing and
/// this is a Debian or Ubuntu machine where we are root; otherwise says what to run.
pub fn ensure_tool(program: &str, package: &str) -> Result<()> {
    if find_program(program).is_some() || (apt_install(package)? && find_program(program).is_some())
    {
        return Ok(());
    }
    bail!("`{program}` is missing; install it with `sudo apt-get install {package}`")
}

/// Installs a Debian package when we are root on a machine with apt-get; false otherwise.
pub fn apt_install(package: &str) -> Result<bool> {
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Ok(false);
    }
    eprintln!("$ apt-get install -y {package}");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    Ok(status.success())
}

/// `program` on the PATH, or in the sbin directories a normal user's PATH may lack.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    env::split_paths(&path).chain(sbin).map(|dir| dir.join(program)).find(|file| file.is_file())
}
