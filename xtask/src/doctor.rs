//! `cargo xtask doctor`: can this machine run the workshop? One line per check, with the fix
//! for what is missing, then which chapters this machine can run.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use xtask::process::{find_program, is_root};
use xtask::rootfs::find_static_busybox_quietly;

use crate::chapters;

/// What a check found: the line to print, and whether it is good enough.
struct Finding {
    ok: bool,
    line: String,
}

fn good(line: impl Into<String>) -> Finding {
    Finding { ok: true, line: line.into() }
}

fn bad(line: impl Into<String>) -> Finding {
    Finding { ok: false, line: line.into() }
}

/// Each check has a name that the chapter requirements below refer to.
fn checks() -> Vec<(&'static str, Finding)> {
    vec![
        ("root", root()),
        ("kernel", kernel()),
        ("namespaces", namespaces(&["mnt", "uts", "ipc", "pid"])),
        ("net namespace", namespaces(&["net"])),
        ("user namespaces", user_namespaces()),
        ("cgroups", cgroups()),
        ("overlayfs", overlayfs()),
        ("image tools", image_tools()),
        ("veth and bridge", veth_and_bridge()),
        ("firewall", firewall()),
        ("busybox", busybox()),
    ]
}

/// What each chapter of the book needs, by check name.
const CHAPTER_NEEDS: &[(u32, &[&str])] = &[
    (1, &["root", "busybox", "kernel"]),
    (2, &["root", "busybox", "namespaces", "kernel"]),
    (3, &["root", "busybox", "namespaces", "kernel"]),
    (4, &["root", "busybox", "namespaces", "cgroups", "kernel"]),
    (5, &["root", "busybox", "namespaces", "net namespace", "veth and bridge", "firewall"]),
    // Chapter 6 runs every option of chapters 1-5 on images; its checks make and read
    // images with skopeo and umoci.
    (
        6,
        &[
            "root",
            "busybox",
            "kernel",
            "namespaces",
            "net namespace",
            "cgroups",
            "veth and bridge",
            "firewall",
            "overlayfs",
            "image tools",
        ],
    ),
    (7, &["root", "busybox", "namespaces", "user namespaces"]),
];

pub fn doctor() -> Result<()> {
    let findings = checks();
    for (name, finding) in &findings {
        println!("{} {name}: {}", if finding.ok { "✓" } else { "✗" }, finding.line);
    }
    println!();
    let ok = |need: &str| findings.iter().any(|(name, finding)| *name == need && finding.ok);
    for chapter in chapters::crates()? {
        let needs = CHAPTER_NEEDS.iter().find(|(n, _)| *n == chapter.number);
        let missing: Vec<&str> = needs
            .map(|(_, needs)| needs.iter().copied().filter(|n| !ok(n)).collect())
            .unwrap_or_default();
        if missing.is_empty() {
            println!("✓ chapter {}: ready", chapter.number);
        } else {
            println!("✗ chapter {}: needs {}", chapter.number, missing.join(", "));
        }
    }
    Ok(())
}

fn root() -> Finding {
    if is_root() {
        return good("running as root");
    }
    let sudo = Command::new("sudo").args(["-n", "true"]).stderr(Stdio::null()).status();
    match sudo {
        Ok(status) if status.success() => good("sudo works without a password"),
        Ok(_) => good("sudo will ask for your password when a check runs a container"),
        Err(_) => bad("not root and no sudo: run the workshop as root (`su -`)"),
    }
}

fn kernel() -> Finding {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut numbers = release.split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (5, 14) {
        good(format!("Linux {release}"))
    } else {
        bad(format!(
            "Linux {release}: the workshop needs 5.14 or newer (openat2(2) from 5.6, \
             close_range(2)'s close-on-exec from 5.11, mount_setattr(2) from 5.12, cgroup.kill \
             from 5.14); use a newer VM image"
        ))
    }
}

fn namespaces(kinds: &[&str]) -> Finding {
    let missing: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|kind| !Path::new("/proc/self/ns").join(kind).exists())
        .collect();
    if missing.is_empty() {
        good(kinds.join(", "))
    } else {
        bad(format!(
            "the kernel lacks {} namespaces (CONFIG_*_NS); use a distribution kernel",
            missing.join(", ")
        ))
    }
}

fn user_namespaces() -> Finding {
    let max = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim().parse::<u64>().unwrap_or(0) == 0 {
        return bad("user namespaces are off: `sysctl -w user.max_user_namespaces=15000`");
    }
    let restricted = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns";
    if fs::read_to_string(restricted).is_ok_and(|value| value.trim() == "1") {
        return good(
            "allowed for root; AppArmor restricts them for other users (rootless needs \
             `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)",
        );
    }
    good(format!("allowed (max {})", max.trim()))
}

fn cgroups() -> Finding {
    let is_cgroup2 =
        |path: &str| statfs(path).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if is_cgroup2("/sys/fs/cgroup") {
        let controllers =
            fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").unwrap_or_default();
        let missing: Vec<&str> = ["cpu", "memory", "pids"]
            .into_iter()
            .filter(|c| !controllers.split_whitespace().any(|x| x == *c))
            .collect();
        if missing.is_empty() {
            return good(format!("cgroup v2 (unified), controllers: {}", controllers.trim()));
        }
        return bad(format!(
            "cgroup v2 (unified), but {} not enabled in /sys/fs/cgroup/cgroup.subtree_control: \
             `echo +{} > /sys/fs/cgroup/cgroup.subtree_control`",
            missing.join(", "),
            missing.join(" +")
        ));
    }
    let layout = if is_cgroup2("/sys/fs/cgroup/unified") { "hybrid" } else { "legacy" };
    let missing: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| !Path::new("/sys/fs/cgroup").join(c).join("cgroup.procs").exists())
        .collect();
    if missing.is_empty() {
        good(format!("cgroup v1 ({layout}): cpu, memory, pids mounted"))
    } else {
        bad(format!(
            "cgroup v1 ({layout}), but {} not mounted under /sys/fs/cgroup",
            missing.join(", ")
        ))
    }
}

fn overlayfs() -> Finding {
    let registered = fs::read_to_string("/proc/filesystems")
        .is_ok_and(|list| list.lines().any(|line| line.ends_with("overlay")));
    if registered || kernel_has("overlay", "CONFIG_OVERLAY_FS") {
        good("overlayfs available")
    } else {
        bad("overlayfs missing: `modprobe overlay`, or a kernel with CONFIG_OVERLAY_FS")
    }
}

/// Whether the kernel has `module`: loaded, loadable, or built in (which the kernel config
/// tells; built-in drivers without parameters do not show in /sys/module).
fn kernel_has(module: &str, config: &str) -> bool {
    Path::new("/sys/module").join(module).exists()
        || Command::new("modprobe")
            .args(["-n", module])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
        || kernel_config().lines().any(|line| {
            line.strip_prefix(config).is_some_and(|value| value == "=y" || value == "=m")
        })
}

/// The running kernel's build configuration, from /boot or /proc/config.gz.
fn kernel_config() -> String {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let boot_config = format!("/boot/config-{}", release.trim());
    fs::read_to_string(boot_config).unwrap_or_else(|_| {
        Command::new("zcat")
            .arg("/proc/config.gz")
            .stderr(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    })
}

fn veth_and_bridge() -> Finding {
    let missing: Vec<&str> = [("veth", "CONFIG_VETH"), ("bridge", "CONFIG_BRIDGE")]
        .into_iter()
        .filter(|(module, config)| !kernel_has(module, config))
        .map(|(module, _)| module)
        .collect();
    if missing.is_empty() {
        good("veth and bridge available")
    } else {
        bad(format!("{} missing: `modprobe {}`", missing.join(", "), missing.join(" ")))
    }
}

fn firewall() -> Finding {
    let on_path = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    match (on_path("nft"), on_path("iptables")) {
        (true, _) => good("nftables (nft)"),
        (false, true) => good("iptables"),
        (false, false) => bad("neither nft nor iptables: `sudo apt-get install nftables`"),
    }
}

/// skopeo and umoci: chapter 6's test images are made with them, and its checks and bench
/// compare crabbox's store with what they read and write.
fn image_tools() -> Finding {
    let missing: Vec<&str> =
        ["skopeo", "umoci"].into_iter().filter(|tool| find_program(tool).is_none()).collect();
    if missing.is_empty() {
        good("skopeo and umoci")
    } else {
        bad(format!("{} missing: `sudo apt-get install {}`", missing.join(", "), missing.join(" ")))
    }
}

fn busybox() -> Finding {
    match find_static_busybox_quietly() {
        Some(path) => good(format!("static busybox at {}", path.display())),
        None => bad("no static busybox: `sudo apt-get install busybox-static`"),
    }
}
