//! What the runtime says when a container in a cgroup has ended.

use anyhow::Result;

use crate::cgroups::{Cgroup, Stats};
use crate::limits::show_size;

// ANCHOR: report_end
/// Says why the container ended when the kernel killed it for memory (`memory` is its
/// limit), and its resource use when `stats` is asked for. `runtime` names the binary.
pub fn report_end(runtime: &str, cgroup: &Cgroup, memory: Option<u64>, stats: bool) -> Result<()> {
    if cgroup.oom_kills()? > 0 {
        match memory {
            Some(limit) => {
                eprintln!("{runtime}: killed: out of memory, limit {}", show_size(limit))
            }
            None => eprintln!("{runtime}: killed: out of memory"),
        }
    }
    if stats {
        eprintln!("{runtime}: {}", describe(&cgroup.stats()?));
    }
    Ok(())
}
// ANCHOR_END: report_end

fn describe(stats: &Stats) -> String {
    let unknown = || "unknown".to_string();
    let memory = stats.peak_memory.map_or_else(unknown, show_size);
    let cpu = stats.cpu_usec.map_or_else(unknown, |usec| format!("{:.3} s", usec as f64 / 1e6));
    let throttled = stats.throttled.map_or_else(unknown, |n| n.to_string());
    format!("peak memory {memory}, cpu time {cpu}, throttled {throttled} times")
}
