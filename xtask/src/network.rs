//! `cargo xtask network-rm`: removes what killed runtimes left (`ch05 cleanup`), then what
//! chapter 5's bridge network leaves on the host for the next container (the bridge
//! crabbox0, crabbox's NAT table and chains, the address store), by running
//! `ch05 network-rm`, which refuses while a container uses them.

use anyhow::Result;
use xtask::process::{as_root, run};

use crate::cargo::build_chapter;
use crate::chapters;

/// The chapter whose binary sets up, and removes, the bridge network.
const NETWORK_CHAPTER: u32 = 5;

pub fn network_rm() -> Result<()> {
    let all = chapters::all()?;
    let binaries = build_chapter(chapters::find(&all, NETWORK_CHAPTER)?, &all)?;
    let binary = binaries.bin(&format!("ch{NETWORK_CHAPTER:02}"))?;
    run(as_root(binary).arg("cleanup"))?;
    run(as_root(binary).arg("network-rm"))
}
