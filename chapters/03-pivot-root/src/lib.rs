//! Chapter 3: a mount namespace, pivot_root(2), and the filesystems a container expects.
//!
//! A mount namespace gives the container its own mount table: what it mounts is invisible
//! to the host, and the host's mounts can be taken away from it. `pivot_root` replaces
//! chapter 1's chroot: the rootfs becomes the root of that mount table, the old root is
//! unmounted, and there is nothing left to escape to. The container then gets a `/proc` of
//! its own PID namespace, a read-only `/sys` and a small `/dev`. Still shared with the host:
//! the network, cgroups (resource limits) and users.

pub mod cli;
pub mod filesystems;
pub mod mounts;
pub mod pivot_root;
pub mod volumes;
