//! Creating the container's process in new namespaces with clone(2).

use anyhow::{Context, Result};
use nix::sched::{clone, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

// ANCHOR: namespaces
/// The namespaces of this chapter. See namespaces(7).
pub const NAMESPACES: CloneFlags =
    CloneFlags::CLONE_NEWPID.union(CloneFlags::CLONE_NEWUTS).union(CloneFlags::CLONE_NEWIPC);
// ANCHOR_END: namespaces

const CHILD_STACK_SIZE: usize = 1024 * 1024;

// ANCHOR: spawn_in_namespaces
/// Runs `child` in a new process inside new namespaces of the kinds in `namespaces`; the
/// process exits with the status `child` returns. Returns its pid as the parent sees it.
pub fn spawn_in_namespaces(namespaces: CloneFlags, child: impl FnOnce() -> u8) -> Result<Pid> {
    // EXERCISE 2.1: clone(2) a child in the new `namespaces` that runs `child` and exits with its status; ask for SIGCHLD when it ends, so waitpid(2) works as after fork
    let mut stack = vec![0u8; CHILD_STACK_SIZE];
    let mut child = Some(child);
    let run_child = Box::new(move || {
        let child = child.take().expect("clone(2) runs the child once");
        isize::from(child())
    });
    // SAFETY: without CLONE_VM the child runs in a copy of this single-threaded process's
    // memory, exactly as after fork(2); the stack is used only by that copy.
    unsafe { clone(run_child, &mut stack, namespaces, Some(Signal::SIGCHLD as i32)) }
        .context("clone the container process into new namespaces")
    // END EXERCISE
}
// ANCHOR_END: spawn_in_namespaces
