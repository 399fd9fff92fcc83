//! Running cargo and the checks the way every task needs them: echoed, from the project
//! root, with the checks as root (under `sudo -E` when we are not root; cargo never is).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use xtask::host_tools::ensure_tool;
use xtask::rootfs::is_root;
use xtask::{command_line, host_triple, project_root};

use crate::chapters::Chapter;

pub fn cargo() -> Command {
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(project_root());
    cargo
}

/// Echoes `command` as `$ …`, runs it, and fails unless it succeeds.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("$ {}", command_line(command));
    let status = command.status().with_context(|| format!("start {}", command_line(command)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", command_line(command));
    }
    Ok(())
}

/// A command for `program` that runs as root: directly when we are root, else with sudo.
pub fn as_root(program: &Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(program);
        sudo
    }
}

/// Builds the binaries of `chapter` and the static helpers of every chapter up to it (later
/// checks reuse earlier helpers, such as chapter 1's escape).
pub fn build_chapter(chapter: &Chapter, all: &[Chapter]) -> Result<()> {
    for (program, package) in &chapter.host_tools {
        ensure_tool(program, package)?;
    }
    run(cargo().args(["build", "--quiet", "-p", &chapter.package, "--bins"]))?;
    for earlier in all.iter().filter(|c| c.number <= chapter.number) {
        for helper in &earlier.static_bins {
            build_static(&earlier.package, helper)?;
        }
    }
    Ok(())
}

/// Builds one binary linked statically. `--target` keeps the flag away from build scripts
/// and proc macros (which cannot be static) and puts the result in target/<triple>/.
fn build_static(package: &str, bin: &str) -> Result<()> {
    let target = host_triple();
    run(cargo()
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--target", &target])
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))
}

/// Builds the integration test `name` (tests/<name>.rs) and returns its executable.
pub fn test_executable(name: &str) -> Result<PathBuf> {
    let output = cargo()
        .args(["test", "--quiet", "--no-run", "--message-format=json", "--test", name])
        .output()
        .context("run cargo test --no-run")?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("building the checks in tests/{name}.rs failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == name)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo did not report the executable of tests/{name}.rs"))
}
