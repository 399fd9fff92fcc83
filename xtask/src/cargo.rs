//! Building with cargo the way every task needs it: echoed, from the project root, and
//! finding what was built from cargo's JSON messages (the `executable` of each artifact), so
//! no task assumes where the target directory is.

use std::collections::BTreeMap;
use std::env;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xtask::host_tools::ensure_tools;
use xtask::process::command_line;
use xtask::{binary_var, host_triple, project_root};

use crate::chapters::Chapter;

pub fn cargo() -> Command {
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(project_root());
    cargo
}

/// The executables a build made, by the environment variable that names each one for the
/// checks ([`binary_var`]).
#[derive(Debug, Default)]
pub struct Binaries {
    by_var: BTreeMap<String, PathBuf>,
}

impl Binaries {
    /// The dynamically linked binary `name`.
    pub fn bin(&self, name: &str) -> Result<&Path> {
        self.by_var
            .get(&binary_var(name, false))
            .map(PathBuf::as_path)
            .with_context(|| format!("cargo built no binary `{name}`"))
    }

    /// The statically linked binary `name`.
    pub fn static_bin(&self, name: &str) -> Result<&Path> {
        self.by_var
            .get(&binary_var(name, true))
            .map(PathBuf::as_path)
            .with_context(|| format!("cargo built no static binary `{name}`"))
    }

    /// `CRABBOX_BIN_…=PATH` for each binary, for the checks.
    pub fn env(&self) -> Vec<(String, String)> {
        self.by_var.iter().map(|(var, path)| (var.clone(), path.display().to_string())).collect()
    }
}

/// Runs `cargo` (a `build` or `test --no-run` command), echoed, and returns the executables
/// it reports, `statically_linked` or not. Compiler messages go to stderr as cargo would show
/// them.
pub fn build(cargo: &mut Command, statically_linked: bool) -> Result<Binaries> {
    cargo.arg("--message-format=json").stdout(Stdio::piped());
    eprintln!("$ {}", command_line(cargo));
    let mut child = cargo.spawn().with_context(|| format!("start {}", command_line(cargo)))?;
    let stdout = child.stdout.take().expect("cargo's stdout is piped");
    let mut binaries = Binaries::default();
    for line in BufReader::new(stdout).lines() {
        let message: Value = serde_json::from_str(&line?).unwrap_or_default();
        if let Some(rendered) = message["message"]["rendered"].as_str() {
            eprint!("{rendered}");
        }
        let (Some(name), Some(executable)) =
            (message["target"]["name"].as_str(), message["executable"].as_str())
        else {
            continue;
        };
        binaries.by_var.insert(binary_var(name, statically_linked), executable.into());
    }
    let status = child.wait().context("wait for cargo")?;
    if !status.success() {
        bail!("`{}` failed ({status})", command_line(cargo));
    }
    Ok(binaries)
}

/// Builds the binaries of `chapter` and the static helpers of every chapter up to it (later
/// checks reuse earlier helpers, such as chapter 1's escape), and returns them all.
pub fn build_chapter(chapter: &Chapter, all: &[Chapter]) -> Result<Binaries> {
    let tools = chapter.host_tools.iter().map(|(program, package)| (&**program, &**package));
    ensure_tools(tools).with_context(|| format!("chapter {} needs them", chapter.number))?;
    // The chapter before too: a chapter that closes a hole shows the attack working there.
    let mut build_command = cargo();
    build_command.args(["build", "--quiet", "-p", &chapter.package, "--bins"]);
    if let Some(before) = all.iter().find(|c| c.number + 1 == chapter.number) {
        build_command.args(["-p", &before.package]);
    }
    let mut binaries = build(&mut build_command, false)?;
    for earlier in all.iter().filter(|c| c.number <= chapter.number) {
        for helper in &earlier.static_bins {
            binaries.by_var.extend(build_static(&earlier.package, helper)?.by_var);
        }
    }
    Ok(binaries)
}

/// Builds one binary linked statically. `--target` keeps the flag away from build scripts
/// and proc macros (which cannot be static) and puts the result in its own directory.
fn build_static(package: &str, bin: &str) -> Result<Binaries> {
    let target = host_triple();
    let mut cargo = cargo();
    cargo
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--target", &target])
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    build(&mut cargo, true)
}

/// Builds the integration test `name` (tests/<name>.rs) and returns its executable. It
/// depends on no chapter (it runs their binaries), so one build serves a whole run of this
/// program, however many variants of the chapters the guarantee builds.
pub fn test_executable(name: &str) -> Result<PathBuf> {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(executable) = built.get(name) {
        return Ok(executable.clone());
    }
    let binaries = build(cargo().args(["test", "--quiet", "--no-run", "--test", name]), false)
        .with_context(|| format!("building the checks in tests/{name}.rs failed"))?;
    let executable = binaries.bin(name)?.to_path_buf();
    built.insert(name.to_string(), executable.clone());
    Ok(executable)
}
