//! execve(2): replace the child with the container's command, with only what it is given
//! (its arguments, its environment, stdin, stdout and stderr), and explain why it failed.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::execve;

use crate::env::lookup;

/// Why the command could not replace the child process.
#[derive(Debug)]
pub enum ExecFailure {
    /// No file by that name in the rootfs (exit status 127, as in a shell).
    NotFound { command: String },
    /// The file is there, but the dynamic loader it names is not (also 127).
    MissingLoader { command: String, loader: PathBuf },
    /// The file is there but cannot be executed (126).
    NotExecutable { command: String, reason: String },
}

impl ExecFailure {
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecFailure::NotFound { .. } | ExecFailure::MissingLoader { .. } => 127,
            ExecFailure::NotExecutable { .. } => 126,
        }
    }
}

impl fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecFailure::NotFound { command } => {
                write!(f, "{command}: command not found in the rootfs")
            }
            ExecFailure::MissingLoader { command, loader } => write!(
                f,
                "{command}: cannot run: it is dynamically linked and its loader {} is missing \
                 from the rootfs; copy the loader and the libraries it needs into the rootfs, \
                 or use a statically linked binary",
                loader.display()
            ),
            ExecFailure::NotExecutable { command, reason } => {
                write!(f, "{command}: cannot execute: {reason}")
            }
        }
    }
}

// ANCHOR: exec_command
/// Replaces this process with `argv` and the environment `env` (`KEY=VALUE` strings), the
/// command looked up on the container's `PATH` as a shell does. Returns only when that
/// failed, saying why.
pub fn exec_command(argv: &[String], env: &[String]) -> ExecFailure {
    let command = argv[0].clone();
    let Some(path) = find_command(&command, lookup(env, "PATH").unwrap_or_default()) else {
        return ExecFailure::NotFound { command };
    };
    let args: Vec<CString> = argv.iter().map(|arg| c_string(OsStr::new(arg))).collect();
    let env: Vec<CString> = env.iter().map(|var| c_string(OsStr::new(var))).collect();
    restore_sigpipe();
    if let Err(errno) = close_fds_on_exec() {
        let reason = format!("close_range(2) failed: {}", errno.desc().to_lowercase());
        return ExecFailure::NotExecutable { command, reason };
    }
    let Err(errno) = execve(&c_string(path.as_os_str()), &args, &env);
    explain_exec_error(command, &path, errno)
}
// ANCHOR_END: exec_command

// ANCHOR: close_fds_on_exec
/// Marks every file descriptor above stderr close-on-exec, so the command starts with
/// stdin, stdout and stderr only. Whatever the runtime's caller left open (a shell's
/// `exec 7</tmp`, a terminal's extra fds) would otherwise reach the container: a descriptor
/// on a host directory is a way out of any root, through `/proc/self/fd/7/..` (runc's
/// CVE-2024-21626).
pub fn close_fds_on_exec() -> Result<(), Errno> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC closes nothing now; the descriptors
    // stay valid for every owner in this process until execve(2) replaces it.
    let result = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    Errno::result(result).map(drop)
}
// ANCHOR_END: close_fds_on_exec

/// Rust's runtime ignores SIGPIPE before `main`, and an ignored signal stays ignored across
/// execve(2) (see signal(7)): without this, `yes | head -1` in the container would see
/// EPIPE errors instead of ending quietly. std::process::Command does the same reset.
fn restore_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no Rust code can run in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

// ANCHOR: find_command
/// Finds `command` the way execvp(3) does: a name with a `/` is a path, any other name is
/// looked for in each directory of `search_path` (a colon-separated `$PATH`).
pub fn find_command(command: &str, search_path: &str) -> Option<PathBuf> {
    if command.contains('/') {
        let path = PathBuf::from(command);
        return path.exists().then_some(path);
    }
    // EXERCISE 1.3: return the first `dir/command` that is a file, for a dir of `search_path` in turn
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|path| path.is_file())
    // END EXERCISE
}
// ANCHOR_END: find_command

// ANCHOR: explain_exec_error
fn explain_exec_error(command: String, path: &Path, errno: Errno) -> ExecFailure {
    match errno {
        // See execve(2), ENOENT: "The file pathname or a script or ELF interpreter does not
        // exist." The file exists (find_command saw it), so its loader must be missing.
        Errno::ENOENT => match elf_interpreter(path) {
            Some(loader) => ExecFailure::MissingLoader { command, loader },
            None => ExecFailure::NotFound { command },
        },
        Errno::EACCES => ExecFailure::NotExecutable {
            command,
            reason: "permission denied (it needs to be a regular file with execute permission)"
                .into(),
        },
        Errno::ENOEXEC => {
            ExecFailure::NotExecutable { command, reason: "not an executable format".into() }
        }
        other => ExecFailure::NotExecutable { command, reason: other.desc().to_lowercase() },
    }
}
// ANCHOR_END: explain_exec_error

fn c_string(text: &OsStr) -> CString {
    CString::new(text.as_bytes()).expect("command-line arguments never contain a NUL byte")
}

const PT_INTERP: u32 = 3;

/// The dynamic loader that the kernel has to start to run the ELF file at `path`: the
/// `PT_INTERP` program header of elf(5). `None` for static binaries, scripts and anything
/// that is not a 64-bit little-endian ELF file (the format of x86_64 and aarch64).
pub fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    let bytes = fs::read(path).ok()?;
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let table_offset = read_u64(&bytes, 0x20)? as usize;
    let entry_size = usize::from(read_u16(&bytes, 0x36)?);
    let entries = usize::from(read_u16(&bytes, 0x38)?);
    (0..entries).find_map(|index| {
        let header = table_offset + index * entry_size;
        if read_u32(&bytes, header)? != PT_INTERP {
            return None;
        }
        let offset = read_u64(&bytes, header + 8)? as usize;
        let size = read_u64(&bytes, header + 32)? as usize;
        let name = bytes.get(offset..offset + size)?.split(|&byte| byte == 0).next()?;
        Some(PathBuf::from(OsStr::from_bytes(name)))
    })
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_binary_names_its_loader() {
        let this_test = std::env::current_exe().unwrap();
        let loader = elf_interpreter(&this_test).expect("test binaries are dynamically linked");
        assert!(loader.to_string_lossy().contains("ld-linux"), "{}", loader.display());
    }

    #[test]
    fn a_text_file_has_no_loader() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(elf_interpreter(&script), None);
    }

    #[test]
    fn commands_are_found_on_the_search_path_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
            fs::write(dir.path().join(sub).join("tool"), "").unwrap();
        }
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let search_path = format!("/nonexistent::{}:{}", b.display(), a.display());
        assert_eq!(find_command("tool", &search_path), Some(b.join("tool")));
        assert_eq!(find_command("missing", &search_path), None);
    }

    #[test]
    fn a_command_with_a_slash_is_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        fs::write(&tool, "").unwrap();
        assert_eq!(find_command(tool.to_str().unwrap(), ""), Some(tool.clone()));
        assert_eq!(find_command("./no/such/tool", "/bin"), None);
    }
}
