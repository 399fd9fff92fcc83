//! A one-way gate between parent and child: the child waits at it until the parent opens it.
//! The parent opens it once the child is in its cgroup with its limits written, so the
//! limits hold from the command's first instruction. A pipe: the child reads one byte.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::unistd::{close, pipe2, read, write};

#[derive(Debug)]
pub struct Gate {
    read_end: OwnedFd,
    write_end: OwnedFd,
}

impl Gate {
    /// Creates the gate; create it before the child, which inherits both ends.
    pub fn new() -> Result<Gate> {
        // Close-on-exec, so neither end leaks into the container's command.
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("create a pipe")?;
        Ok(Gate { read_end, write_end })
    }

    // ANCHOR: wait
    /// In the child: waits until the parent opens the gate. Fails when the parent closed it
    /// without opening it (it failed and will report why).
    pub fn wait(&self) -> Result<()> {
        // The child's copy of the write end must go, or the read below would never see
        // end-of-file if the parent died. The child never drops its copy of the struct (it
        // ends with exec or _exit), so this closes the descriptor exactly once.
        close(self.write_end.as_raw_fd()).context("close the child's write end")?;
        let mut byte = [0u8; 1];
        match read(&self.read_end, &mut byte).context("wait for the parent")? {
            1 => Ok(()),
            _ => bail!("the runtime stopped before the container could start"),
        }
    }
    // ANCHOR_END: wait

    /// In the parent: lets the child go on.
    pub fn open(self) -> Result<()> {
        drop(self.read_end);
        write(&self.write_end, b"1").context("open the gate for the child")?;
        Ok(())
    }
}
