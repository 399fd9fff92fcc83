//! `ch02-msgq create|show|remove KEY`: creates, looks up or removes a System V message queue
//! in the caller's IPC namespace, so the checks can show that each namespace has queues of
//! its own. Built statically, to run in the busybox rootfs, whose busybox has no IPC tools.

use std::process::ExitCode;

use nix::errno::Errno;
use nix::libc::{self, key_t};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(action), Some(key)) = (args.first(), args.get(1).and_then(|key| parse_key(key)))
    else {
        eprintln!("usage: ch02-msgq create|show|remove KEY   (KEY in hex, 0x…)");
        return ExitCode::from(2);
    };
    let result = match action.as_str() {
        "create" => create_queue(key),
        "show" => find_queue(key),
        "remove" => remove_queue(key),
        _ => Err(Errno::EINVAL),
    };
    match result {
        Ok(id) => {
            println!("queue 0x{key:08x}: id {id}");
            ExitCode::SUCCESS
        }
        Err(Errno::ENOENT) => {
            println!("queue 0x{key:08x}: none");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("ch02-msgq: {action} queue 0x{key:08x}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse_key(text: &str) -> Option<key_t> {
    let digits = text.strip_prefix("0x")?;
    u32::from_str_radix(digits, 16).ok().map(|key| key as key_t)
}

fn create_queue(key: key_t) -> Result<i32, Errno> {
    // SAFETY: msgget(2) takes two integers and touches no memory of ours.
    Errno::result(unsafe { libc::msgget(key, libc::IPC_CREAT | 0o600) })
}

fn find_queue(key: key_t) -> Result<i32, Errno> {
    // SAFETY: as above.
    Errno::result(unsafe { libc::msgget(key, 0) })
}

fn remove_queue(key: key_t) -> Result<i32, Errno> {
    let id = find_queue(key)?;
    // SAFETY: IPC_RMID ignores the buffer argument, so null is allowed (msgctl(2)).
    Errno::result(unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) })?;
    Ok(id)
}
