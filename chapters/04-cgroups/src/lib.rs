//! Chapter 4: control groups. A cgroup is a group of processes whose use of memory, CPU
//! time and process slots the kernel counts and limits. The container's processes go into a
//! cgroup of their own, `crabbox/<id>`, before the command runs; a cgroup namespace makes
//! that cgroup the root of what the container sees. Two versions of the interface exist:
//! v2, one tree for every controller (current distributions), and v1, one tree per
//! controller (older hosts). This chapter drives both.

pub mod cgroups;
pub mod cleanup;
pub mod cli;
pub mod gate;
pub mod limits;
pub mod report;
