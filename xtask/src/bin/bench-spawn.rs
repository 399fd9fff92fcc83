//! `bench-spawn COMMAND [ARGS…]`: runs COMMAND with its output discarded, and prints its wall
//! time in microseconds and its peak resident set size in KiB (wait4(2)'s ru_maxrss), for
//! `cargo xtask bench`.
//!
//! It is a binary of its own, and a small one, because ru_maxrss has a floor: a process
//! keeps, across execve(2), the peak memory it had before, which for a new child is its
//! parent's. Started fresh, this program passes on little.

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, args)) = args.split_first() else {
        eprintln!("usage: bench-spawn COMMAND [ARGS…]");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            eprintln!("start {program}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Drained while the command runs: a full pipe would stop it.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let drain = std::thread::spawn(move || {
        let mut why = String::new();
        let _ = stderr.read_to_string(&mut why);
        why
    });
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (std's Child is never used to wait);
    // both pointers are to live, writable locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    if waited != pid {
        eprintln!("wait for {program}: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let why = drain.join().unwrap_or_default();
        eprintln!("{program} failed (wait status {status}): {}", why.trim());
        return ExitCode::FAILURE;
    }
    println!("{} {}", elapsed.as_micros(), usage.ru_maxrss);
    ExitCode::SUCCESS
}
