//! The host programs the tasks and a chapter's checks call (`nft`, `qemu-system-x86_64` …),
//! installed from Debian's packages when they are missing and we may, or asked for by name.

use std::io;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Result};

use crate::process::{find_program, is_root, run};

/// Makes sure every `(program, package)` of `tools` is installed: installs the Debian
/// packages of the missing ones when this is a Debian or Ubuntu machine where we are root;
/// otherwise fails with the command that installs them.
pub fn ensure_tools<'a>(tools: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    let tools: Vec<(&str, &str)> = tools.into_iter().collect();
    let missing = missing_packages(&tools);
    if missing.is_empty() {
        return Ok(());
    }
    if !apt_install(&missing)? {
        bail!("missing programs; install them with `sudo apt-get install {}`", missing.join(" "));
    }
    let still_missing = missing_packages(&tools);
    ensure!(still_missing.is_empty(), "apt-get did not install {}", still_missing.join(", "));
    Ok(())
}

/// The packages of the programs in `tools` that are not installed, each named once.
fn missing_packages<'a>(tools: &[(&str, &'a str)]) -> Vec<&'a str> {
    let mut packages = Vec::new();
    for &(program, package) in tools {
        if find_program(program).is_none() && !packages.contains(&package) {
            packages.push(package);
        }
    }
    packages
}

/// Installs Debian `packages` when we are root on a machine with apt-get; false when we
/// cannot try.
pub fn apt_install(packages: &[&str]) -> Result<bool> {
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Ok(false);
    }
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(packages);
    apt_get(&install, Path::new("/"))?;
    Ok(true)
}

/// Runs `apt-get args` in `dir`, echoed, with its chatter on stderr (stdout may be a guest
/// command's). When that fails, it updates the package lists and tries once more: a fresh
/// machine may have none, or lists that name versions gone from the mirror.
pub fn apt_get(args: &[&str], dir: &Path) -> Result<()> {
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).current_dir(dir).env("DEBIAN_FRONTEND", "noninteractive");
        command.stdout(io::stderr());
        command
    };
    if run(&mut apt_get(args)).is_ok() {
        return Ok(());
    }
    run(&mut apt_get(&["update"]))?;
    run(&mut apt_get(args))
}
