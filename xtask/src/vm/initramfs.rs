//! The guest's initramfs: a static busybox, the kernel modules the chapters need, and
//! init.sh as `/init`. Everything but `/init` is prepared once and cached; each boot appends
//! `/init` as an archive of its own.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use xtask::rootfs::find_static_busybox;
use xtask::{build_in_place, project_root};

use super::kernel::{extract_vmlinux, kernel_package, unpack_kernel_package};

/// The guest's PID 1, a busybox shell script (init.sh). Stage 1 runs in the initramfs: it
/// mounts the kernel's file systems, loads the modules, mounts the cgroups in the layout the
/// kernel command line asks for, and switches into the host's root. Stage 2 runs there: it
/// runs the host's `run.sh` from the work share, writes back its exit status, and ends the
/// guest.
const INIT: &str = include_str!("init.sh");

/// The prepared guest: a kernel, and an initramfs with busybox and the modules but no /init
/// (each boot appends it: see [`write_initrd`]).
#[derive(Debug)]
pub(super) struct Guest {
    pub(super) kernel: PathBuf,
    initramfs: PathBuf,
}

impl Guest {
    fn in_dir(dir: &Path) -> Guest {
        Guest { kernel: dir.join("kernel"), initramfs: dir.join("initramfs.cpio.gz") }
    }
}

/// The modules the guest loads at boot, with their dependencies: virtio and 9p for the shares,
/// then what the chapters use (overlayfs, veth, bridge, NAT with nftables and with iptables).
/// Built-in or missing ones are skipped. The list is baked into the cached initramfs, whose
/// folder is named after it.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_rng",
    "9pnet_virtio",
    "9p",
    "overlay",
    "veth",
    "bridge",
    "br_netfilter",
    "nf_nat",
    "nf_conntrack",
    "nf_tables",
    "nft_nat",
    "nft_masq",
    "nft_chain_nat",
    "nft_ct",
    "nft_compat",
    "iptable_nat",
    "iptable_filter",
    "xt_MASQUERADE",
    "xt_conntrack",
    "xt_addrtype",
    "xt_comment",
    "xt_nat",
    "xt_tcpudp",
    "iptable_raw",
    "nft_fib_ipv4",
];

/// A short name for the module list: a guest prepared with another list is another guest.
fn modules_key() -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(MODULES, &mut hasher);
    format!("{:08x}", std::hash::Hasher::finish(&hasher) as u32)
}

/// Returns the cached guest, preparing it first when it is missing (whole or not at all: see
/// [`build_in_place`]).
pub(super) fn prepared_guest() -> Result<Guest> {
    let dir = project_root().join(format!(".crabbox/vm/guest-{}", modules_key()));
    if !dir.is_dir() {
        eprintln!("preparing the test guest in {} (once)", dir.display());
    }
    build_in_place(&dir, build_guest)?;
    Ok(Guest::in_dir(&dir))
}

fn build_guest(staging: &Path) -> Result<()> {
    fs::create_dir_all(staging).with_context(|| format!("create {}", staging.display()))?;
    let guest = Guest::in_dir(staging);
    let busybox = find_static_busybox()?;
    let scratch = tempfile::Builder::new().prefix("crabbox-vm-").tempdir_in("/tmp")?;
    let package = kernel_package()?;
    let release = package.strip_prefix("linux-image-").expect("kernel_package checks the prefix");
    let kernel_root = unpack_kernel_package(&package, release, scratch.path())?;
    extract_vmlinux(&kernel_root.join(format!("boot/vmlinuz-{release}")), &guest.kernel)?;
    let tree = scratch.path().join("initramfs");
    build_initramfs_tree(&tree, &busybox, &kernel_root, release)?;
    let archive = File::create(&guest.initramfs)
        .with_context(|| format!("create {}", guest.initramfs.display()))?;
    pack_initramfs(&tree, archive)
}

/// Fills `tree` with the initramfs without /init: busybox, the [`MODULES`] at their usual
/// paths, and /etc/modules.load, the modules' paths in load order for [`INIT`].
fn build_initramfs_tree(
    tree: &Path,
    busybox: &Path,
    kernel_root: &Path,
    release: &str,
) -> Result<()> {
    for dir in ["bin", "etc"] {
        fs::create_dir_all(tree.join(dir))
            .with_context(|| format!("create {dir} in the initramfs"))?;
    }
    fs::copy(busybox, tree.join("bin/busybox"))
        .with_context(|| format!("copy {} into the initramfs", busybox.display()))?;
    let modules = modules_in_load_order(kernel_root, release)?;
    for module in &modules {
        let relative = module.trim_start_matches('/');
        let target = tree.join(relative);
        fs::create_dir_all(target.parent().expect("a module path has a directory"))?;
        fs::copy(kernel_root.join(relative), &target)
            .with_context(|| format!("copy module {module} into the initramfs"))?;
    }
    let load_order: String = modules.iter().map(|module| format!("{module}\n")).collect();
    fs::write(tree.join("etc/modules.load"), load_order).context("write /etc/modules.load")
}

/// The files of [`MODULES`] and of their dependencies, each once, dependencies first, as paths
/// in the guest (`/lib/modules/RELEASE/kernel/…`).
fn modules_in_load_order(kernel_root: &Path, release: &str) -> Result<Vec<String>> {
    let root = kernel_root.to_str().context("the kernel's unpack path is not UTF-8")?;
    let mut load_order = Vec::new();
    for module in MODULES {
        let output = Command::new("modprobe")
            .args(["-d", root, "-S", release, "--show-depends", module])
            .output()
            .context("run modprobe --show-depends")?;
        if !output.status.success() {
            eprintln!("note: kernel {release} has no module {module}; the guest goes without it");
            continue;
        }
        for path in insmod_paths(&String::from_utf8_lossy(&output.stdout), root) {
            if !load_order.contains(&path) {
                load_order.push(path);
            }
        }
    }
    Ok(load_order)
}

/// The module files in `modprobe -d ROOT --show-depends` output, without the ROOT prefix. The
/// output has one `insmod PATH [OPTIONS]` line per module to load, dependencies first, and a
/// `builtin NAME` line for each one built into the kernel, which needs nothing.
fn insmod_paths(show_depends: &str, root: &str) -> Vec<String> {
    show_depends
        .lines()
        .filter_map(|line| line.strip_prefix("insmod ")?.split_whitespace().next())
        .filter_map(|path| path.strip_prefix(root))
        .map(String::from)
        .collect()
}

/// Packs everything under `tree` into `archive` as the kernel wants an initramfs: a newc cpio
/// archive, here gzip-compressed, with the files owned by root.
fn pack_initramfs(tree: &Path, archive: File) -> Result<()> {
    let mut paths = Vec::new();
    list_tree(tree, Path::new(""), &mut paths)?;
    let names: String = paths.iter().map(|path| format!("{}\n", path.display())).collect();
    let mut cpio = Command::new("cpio")
        .args(["--quiet", "--create", "--format=newc", "--owner=0:0"])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start cpio")?;
    let mut gzip = Command::new("gzip")
        .arg("-1")
        .stdin(cpio.stdout.take().expect("cpio's stdout is piped"))
        .stdout(archive)
        .spawn()
        .context("start gzip")?;
    // Dropping cpio's stdin after the names ends its input.
    let written = cpio.stdin.take().expect("cpio's stdin is piped").write_all(names.as_bytes());
    let cpio = cpio.wait().context("wait for cpio")?;
    let gzip = gzip.wait().context("wait for gzip")?;
    written.with_context(|| format!("list {} for cpio", tree.display()))?;
    ensure!(
        cpio.success() && gzip.success(),
        "packing {} failed (cpio {cpio}, gzip {gzip})",
        tree.display()
    );
    Ok(())
}

/// Adds the paths under `root.join(dir)` to `paths`, relative to `root`, each directory before
/// what it holds (the kernel creates no missing parents when it unpacks an archive).
fn list_tree(root: &Path, dir: &Path, paths: &mut Vec<PathBuf>) -> Result<()> {
    let listing = fs::read_dir(root.join(dir))
        .with_context(|| format!("list {}", root.join(dir).display()))?;
    let mut entries: Vec<_> = listing.filter_map(|entry| entry.ok()).collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = dir.join(entry.file_name());
        paths.push(path.clone());
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            list_tree(root, &path, paths)?;
        }
    }
    Ok(())
}

/// The initramfs of one boot: the cached one with [`INIT`] appended as a second archive.
/// The kernel unpacks all the archives of an initrd in turn, so a change to INIT needs no new
/// cache.
pub(super) fn write_initrd(guest: &Guest, work: &Path) -> Result<PathBuf> {
    let tree = work.join("boot");
    fs::create_dir(&tree).with_context(|| format!("create {}", tree.display()))?;
    let init = tree.join("init");
    fs::write(&init, INIT).with_context(|| format!("write {}", init.display()))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let initrd = work.join("initrd");
    fs::copy(&guest.initramfs, &initrd)
        .with_context(|| format!("copy {} to {}", guest.initramfs.display(), initrd.display()))?;
    let archive = OpenOptions::new()
        .append(true)
        .open(&initrd)
        .with_context(|| format!("open {} to append /init", initrd.display()))?;
    pack_initramfs(&tree, archive)?;
    Ok(initrd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insmod_lines_give_module_paths_in_the_guest() {
        let output = "builtin virtio_pci\n\
                      insmod /tmp/x/root/lib/modules/6.1/kernel/net/9p/9pnet.ko \n\
                      insmod /tmp/x/root/lib/modules/6.1/kernel/fs/9p/9p.ko opt=1\n";
        assert_eq!(
            insmod_paths(output, "/tmp/x/root"),
            ["/lib/modules/6.1/kernel/net/9p/9pnet.ko", "/lib/modules/6.1/kernel/fs/9p/9p.ko"]
        );
    }
}
