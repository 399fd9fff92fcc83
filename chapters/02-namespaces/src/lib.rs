//! Chapter 2: PID, UTS and IPC namespaces, and the duties of PID 1.
//!
//! A namespace wraps one kind of global resource so that the processes inside see their
//! own copy: a PID namespace its own process numbers starting at 1, a UTS namespace its own
//! hostname, an IPC namespace its own System V queues, semaphores and shared memory. The
//! container still shares the host's mounts (so `/proc` and `ps` still show the host's
//! processes), network, cgroups and users; the next chapters take those away.

pub mod cli;
pub mod hostname;
pub mod init;
pub mod namespaces;
pub mod signals;
pub mod start;
