//! Chapter 1: `chroot(2)`, and why it is not isolation.
//!
//! The child process gets a new root directory: every absolute path it opens is resolved
//! inside ROOTFS. That is all chroot changes. The network, the process table, the hostname,
//! SysV IPC and the mount table are still the host's, and a process that is root can walk
//! out of a chroot (`src/bin/escape.rs` shows how). The next chapters take those away, one
//! kernel mechanism at a time.

pub mod chroot;
pub mod cli;
pub mod env;
pub mod exec;
pub mod process;
pub mod rootfs;
