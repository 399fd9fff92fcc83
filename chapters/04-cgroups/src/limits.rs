//! The limits a user asks for, parsed and checked before anything is created. Pure code:
//! the unit tests need no root.

use anyhow::{bail, Result};

/// The CFS period the quota is a share of: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A CPU bandwidth limit: `quota_us` of CPU time in every `period_us` (see the kernel's
/// Documentation/scheduler/sched-bwc.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// Everything the container's cgroup limits.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory.
    pub memory: Option<u64>,
    /// Bytes of memory plus swap, as docker's `--memory-swap`.
    pub memory_swap: Option<u64>,
    pub cpu: Option<CpuQuota>,
    /// Relative CPU share, 1 to 10000 (default 100), as cgroup v2's `cpu.weight`.
    pub cpu_weight: Option<u64>,
    /// Number of processes and threads.
    pub pids: Option<u64>,
}

/// The kernel's limits are counted in pages of 4 KiB (x86_64; larger on some arm64 kernels,
/// which only lowers what they mean), up to PAGE_COUNTER_MAX = LONG_MAX / PAGE_SIZE pages
/// (mm/page_counter.c). A value written to memory.max is cut down to that many pages, and
/// that many means no limit: so a limit must stay below this many bytes.
pub const KERNEL_MAX_LIMIT: u64 = (i64::MAX as u64 / 4096) * 4096;

impl Limits {
    /// Checks how the limits go together (swap needs memory and cannot be less than it, and
    /// neither is more than the kernel holds), and returns a warning for each limit larger
    /// than this host's memory: one that would never be reached.
    pub fn check(&self) -> Result<Vec<String>> {
        self.check_against(host_memory())
    }

    /// [`Limits::check`] on a host with `host_memory` bytes of RAM (`None`: unknown).
    pub fn check_against(&self, host_memory: Option<u64>) -> Result<Vec<String>> {
        match (self.memory, self.memory_swap) {
            (None, Some(_)) => bail!("--memory-swap needs --memory: it limits memory plus swap"),
            (Some(memory), Some(swap)) if swap < memory => bail!(
                "--memory-swap ({}) is less than --memory ({}); it counts memory plus swap",
                show_size(swap),
                show_size(memory)
            ),
            _ => {}
        }
        let mut warnings = Vec::new();
        for (option, limit) in [("--memory", self.memory), ("--memory-swap", self.memory_swap)] {
            let Some(limit) = limit else { continue };
            if limit >= KERNEL_MAX_LIMIT {
                bail!(
                    "{option} {} is more than the kernel can hold (less than {KERNEL_MAX_LIMIT} \
                     bytes, just under 8 EiB); leave the option out for no limit",
                    show_size(limit)
                );
            }
            if let Some(host) = host_memory.filter(|&host| limit > host) {
                warnings.push(format!(
                    "{option} {} is more than this host's memory ({}): it will never be reached",
                    show_size(limit),
                    show_size(host)
                ));
            }
        }
        Ok(warnings)
    }
}

/// The host's RAM in bytes, from `MemTotal` in /proc/meminfo (see proc_meminfo(5)).
fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find_map(|line| line.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

// ANCHOR: parse_size
/// Parses a size with an optional k, m or g suffix (powers of 1024): `64m`, `1g`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    // EXERCISE 4.1: parse a size like 64m: digits, then an optional k, m or g (upper or lower case) that multiplies by 1024, 1024², 1024³; reject 0, overflow and anything else
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix(['k', 'm', 'g']) {
        Some(digits) => (digits, &lower[digits.len()..]),
        None => (lower.as_str(), ""),
    };
    let shift = match unit {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => 0,
    };
    let invalid =
        || format!("`{text}` is not a size: use a number of bytes with k, m or g, like 64m");
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    match number.checked_mul(1 << shift) {
        Some(0) => Err(format!("`{text}`: a limit of zero bytes would stop everything")),
        Some(bytes) => Ok(bytes),
        None => Err(invalid()),
    }
    // END EXERCISE
}
// ANCHOR_END: parse_size

/// Parses `--cpus`: how many CPUs' worth of time the container may use, like `0.5`.
pub fn parse_cpus(text: &str) -> Result<CpuQuota, String> {
    let cpus: f64 =
        text.parse().map_err(|_| format!("`{text}` is not a number of CPUs, like 0.5"))?;
    let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if cpus.is_nan() || cpus <= 0.0 {
        return Err(format!("`{text}`: the number of CPUs must be more than 0"));
    }
    if cpus > available {
        return Err(format!("`{text}` is more than the {available} CPUs this machine has"));
    }
    Ok(cpu_quota(cpus))
}

// ANCHOR: cpu_quota
/// The quota for `cpus` CPUs per period: 0.5 CPUs is 50 ms of every 100 ms.
pub fn cpu_quota(cpus: f64) -> CpuQuota {
    // The kernel refuses quotas under 1 ms.
    let quota_us = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
    CpuQuota { quota_us, period_us: CPU_PERIOD_US }
}
// ANCHOR_END: cpu_quota

/// `67108864` as `64 MiB`, for messages.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_above_the_kernels_is_refused_and_above_the_hosts_is_warned_about() {
        let host = Some(16 << 30);
        let huge = Limits { memory: Some(parse_size("99999999g").unwrap()), ..Limits::default() };
        let warnings = huge.check_against(host).unwrap();
        assert_eq!(
            warnings,
            ["--memory 95.4 PiB is more than this host's memory (16 GiB): it will never be reached"]
        );
        let too_big = Limits { memory: Some(KERNEL_MAX_LIMIT), ..Limits::default() };
        let err = too_big.check_against(host).unwrap_err().to_string();
        assert!(
            err.contains("more than the kernel can hold (less than 9223372036854771712 bytes"),
            "{err}"
        );
        let fine = Limits { memory: Some(64 << 20), ..Limits::default() };
        assert!(fine.check_against(host).unwrap().is_empty());
        assert!(huge.check_against(None).unwrap().is_empty());
    }

    #[test]
    fn host_memory_is_read_from_meminfo() {
        assert!(host_memory().is_some_and(|bytes| bytes > 1 << 20));
    }

    #[test]
    fn sizes_take_k_m_and_g_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        for bad in ["", "m", "12x", "-5m", "1.5g", "99999999999g"] {
            assert!(parse_size(bad).unwrap_err().contains("like 64m"), "{bad}");
        }
        assert!(parse_size("0m").unwrap_err().contains("zero"));
    }

    #[test]
    fn cpus_become_a_quota_per_100ms() {
        assert_eq!(cpu_quota(0.5), CpuQuota { quota_us: 50_000, period_us: 100_000 });
        assert_eq!(cpu_quota(1.25).quota_us, 125_000);
        assert_eq!(cpu_quota(0.001).quota_us, 1000);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("lots").is_err());
        assert!(parse_cpus("100000").unwrap_err().contains("CPUs this machine has"));
    }

    #[test]
    fn swap_limits_go_with_a_memory_limit() {
        let limits = |memory, memory_swap| Limits { memory, memory_swap, ..Limits::default() };
        assert!(limits(None, Some(1 << 20)).check().is_err());
        assert!(limits(Some(2 << 20), Some(1 << 20)).check().is_err());
        assert!(limits(Some(1 << 20), Some(2 << 20)).check().is_ok());
    }

    #[test]
    fn sizes_show_in_binary_units() {
        assert_eq!(show_size(64 << 20), "64 MiB");
        assert_eq!(show_size(1536), "1.5 KiB");
        assert_eq!(show_size(12), "12 bytes");
    }
}
