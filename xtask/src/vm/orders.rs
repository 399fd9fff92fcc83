//! The guest's orders, written into the work share it mounts: the script that runs the
//! command, and the host directories under /tmp that it needs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xtask::process::shell_quote;

/// Writes the guest's orders into the work share `work`: `run.sh`, the script that runs the
/// command, and `host-tmp-dirs`, the host's directories under /tmp that the command needs.
pub(super) fn write_orders(
    work: &Path,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<()> {
    let script = run_script(program, args, env, cwd)?;
    fs::write(work.join("run.sh"), script).context("write run.sh into the work share")?;
    let dirs: String =
        host_tmp_dirs(&[program, cwd]).iter().map(|dir| format!("{}\n", dir.display())).collect();
    fs::write(work.join("host-tmp-dirs"), dirs).context("write host-tmp-dirs into the work share")
}

/// The script stage 2 of [`INIT`] runs: go to `cwd`, export `env` and VMTEST=1, and exec the
/// program by its absolute path (the guest's PATH need not find it).
fn run_script(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<String> {
    let utf8 = |path: &Path| {
        path.to_str().map(shell_quote).with_context(|| format!("{} is not UTF-8", path.display()))
    };
    let mut script = format!("set -e\ncd {}\n", utf8(cwd)?);
    let env = env.iter().map(|(name, value)| (name.as_str(), value.as_str()));
    for (name, value) in env.chain([("VMTEST", "1")]) {
        script += &format!("export {}\n", shell_quote(&format!("{name}={value}")));
    }
    let command: Vec<String> =
        std::iter::once(utf8(program)?).chain(args.iter().map(|arg| shell_quote(arg))).collect();
    script += &format!("exec {}\n", command.join(" "));
    Ok(script)
}

/// The guest's /tmp is a tmpfs of its own, where everything works (an overlay's upper
/// directory, for one, cannot be on the overlay that is the guest's root). So the host's /tmp
/// is hidden, but a program or working directory may live there (a CARGO_TARGET_DIR, say):
/// these are the entries of /tmp that hold `paths`, which [`INIT`] binds in from the host.
fn host_tmp_dirs(paths: &[&Path]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for path in paths {
        if let Ok(under_tmp) = path.strip_prefix("/tmp") {
            if let Some(first) = under_tmp.components().next() {
                let dir = Path::new("/tmp").join(first);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_script_quotes_everything() {
        let env = [("RUST_LOG".to_string(), "it's".to_string())];
        let args = ["-c".to_string(), "echo $HOME".to_string()];
        let script =
            run_script(Path::new("/bin/sh"), &args, &env, Path::new("/work/my dir")).unwrap();
        assert_eq!(
            script,
            "set -e\ncd '/work/my dir'\nexport 'RUST_LOG=it'\\''s'\nexport VMTEST=1\n\
             exec /bin/sh -c 'echo $HOME'\n"
        );
    }

    #[test]
    fn host_tmp_dirs_are_the_top_entries_of_tmp() {
        let paths = [
            Path::new("/tmp/target/debug/xtask"),
            Path::new("/tmp/target"),
            Path::new("/work/main"),
        ];
        assert_eq!(host_tmp_dirs(&paths), [PathBuf::from("/tmp/target")]);
    }
}
