//! `cargo xtask vm-test`: runs a command in a throwaway Linux guest under qemu, so that cgroup
//! code can be tested on a pure cgroup v2 layout (the default) or a cgroup v1 layout, whatever
//! layout the host has, and without touching the host's cgroups.
//!
//! The guest is Debian's generic kernel with a small initramfs: a static busybox, the kernel
//! modules the chapters need, and the shell script [`INIT`] as `/init`. That script mounts the
//! cgroups in the layout asked for, then switches into the host's own root file system, shared
//! read-only over 9p under a throwaway overlay. So the guest runs the host's binaries (test
//! executables too) at the same paths, with the host's libraries. A second 9p share, a fresh
//! directory /tmp/crabbox-vm-XXXXXX, carries the command in (`run.sh`) and its standard output
//! and exit status back out. The guest has no network device: nothing it does leaves it.
//!
//! The kernel and the initramfs are prepared once (the kernel package is downloaded with apt,
//! not installed) and cached in .crabbox/vm/guest-N, N naming the module list (a new list
//! prepares a new guest); delete .crabbox/vm to prepare them again.
//! Without KVM, qemu emulates the CPU in software (TCG): a boot then takes about 4 s, and the
//! guest computes about 10 times slower than the host, so build on the host, test in the guest.

use std::collections::VecDeque;
use std::env;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::unistd::{access, mkdtemp, AccessFlags};
use xtask::project_root;
use xtask::rootfs::{find_static_busybox, is_root};

use crate::cargo::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupLayout {
    /// Only cgroup2 at /sys/fs/cgroup, with every controller enabled for child cgroups
    V2,
    /// One cgroup v1 hierarchy per controller under /sys/fs/cgroup, as on older hosts
    V1,
}

impl CgroupLayout {
    /// What the kernel command line says about this layout. [`INIT`] reads `crabbox.cgroup`;
    /// `cgroup_no_v1=all` makes the kernel refuse v1 controller mounts, as on a pure v2 host.
    fn kernel_options(self) -> &'static str {
        match self {
            CgroupLayout::V2 => "crabbox.cgroup=v2 cgroup_no_v1=all",
            CgroupLayout::V1 => "crabbox.cgroup=v1",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// cgroup layout of the guest
    #[arg(long, value_enum, default_value = "v2")]
    pub cgroup: CgroupLayout,
    /// Command to run in the guest, in the current directory
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The host's environment variables that `vm-test` passes on to the command.
const PASSED_ENV: &[&str] = &["PATH", "RUST_BACKTRACE", "RUST_LOG"];

/// `cargo xtask vm-test [--cgroup v2|v1] -- COMMAND`: runs COMMAND in a fresh guest, prints its
/// output, and exits with its status (returns Err if the guest could not run it).
pub fn vm_test(args: &VmArgs) -> Result<()> {
    let (program, program_args) = args.command.split_first().expect("clap requires a command");
    let program =
        find_program(program).with_context(|| format!("`{program}` is not a program in PATH"))?;
    let env: Vec<(String, String)> = PASSED_ENV
        .iter()
        .filter_map(|name| Some((name.to_string(), env::var(name).ok()?)))
        .collect();
    let cwd = env::current_dir().context("find the current directory")?;
    let run = run_in_guest(args.cgroup, &program, program_args, &env, &cwd)?;
    print!("{}", run.stdout);
    io::stdout().flush().context("write the command's output")?;
    if run.status != 0 {
        process::exit(run.status);
    }
    Ok(())
}

/// What a command run in the guest left: its exit status and its standard output.
#[derive(Debug)]
pub struct GuestRun {
    pub status: i32,
    pub stdout: String,
}

/// Runs `program args` in a guest with the given layout, with the environment variables `env`
/// set (plus VMTEST=1), in directory `cwd` (same path as on the host). Its stdout is captured
/// (written to a file in the shared work dir, returned in GuestRun.stdout); its stderr and the
/// guest's console go to this process's stderr, filtered of noise (SeaBIOS, escape codes, CRs,
/// "reboot: Restarting system"). Prepares (and caches) the kernel and initramfs first.
pub fn run_in_guest(
    layout: CgroupLayout,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<GuestRun> {
    ensure_host_tools()?;
    let guest = prepared_guest()?;
    let work = TempDir::new()?;
    write_orders(work.path(), program, args, env, cwd)?;
    let initrd = write_initrd(&guest, work.path())?;
    let mut boot = boot_guest(&guest.kernel, &initrd, layout, work.path())?;
    if guest_broke_down(&boot, work.path()) {
        // Seen under TCG, rarely: a guest whose vCPUs spin without progress before the
        // command starts, or a guest kernel that reports a soft lockup mid-run (it then
        // panics, see qemu_command). Neither says anything about the command: boot again.
        eprintln!("note: the guest hung or its kernel locked up; booting it once more");
        let _ = fs::remove_file(work.path().join("stdout"));
        boot = boot_guest(&guest.kernel, &initrd, layout, work.path())?;
    }
    read_result(work.path(), &boot)
}

/// Whether the guest died of itself rather than ran the command to its end: stuck before the
/// command started, or stopped (a kernel panic) without writing the command's exit status.
fn guest_broke_down(boot: &Boot, work: &Path) -> bool {
    match boot.ending {
        Ending::Stuck => true,
        Ending::Exited(_) => !work.join("exit-code").exists(),
        Ending::TimedOut => false,
    }
}

/// The host programs that prepare and boot the guest, and the Debian package of each. Python
/// unpacks the kernel (see [`EXTRACT_VMLINUX`]); busybox is found by `find_static_busybox`.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("modprobe", "kmod"),
    ("depmod", "kmod"),
    ("cpio", "cpio"),
    ("gzip", "gzip"),
    ("python3", "python3"),
];

/// Installs the missing host tools when we are root on Debian or Ubuntu; otherwise fails with
/// the command that installs them.
fn ensure_host_tools() -> Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    if !(is_root() && Path::new("/usr/bin/apt-get").exists()) {
        bail!(
            "the test guest needs the packages {}; install them with `sudo apt-get {}`",
            missing.join(", "),
            install.join(" ")
        );
    }
    apt_get(&install, Path::new("/"))?;
    let still_missing = missing_packages();
    ensure!(still_missing.is_empty(), "apt-get did not install {}", still_missing.join(", "));
    Ok(())
}

/// The packages of the host tools that are not in PATH, each named once.
fn missing_packages() -> Vec<&'static str> {
    let mut packages = Vec::new();
    for &(tool, package) in HOST_TOOLS {
        if find_program(tool).is_none() && !packages.contains(&package) {
            packages.push(package);
        }
    }
    packages
}

/// Runs `apt-get args` in `dir`, echoed, with its chatter on stderr (stdout is the guest
/// command's). When that fails, it updates the package lists and tries once more: a fresh
/// machine may have none, or lists that name versions gone from the mirror.
fn apt_get(args: &[&str], dir: &Path) -> Result<()> {
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).current_dir(dir).env("DEBIAN_FRONTEND", "noninteractive");
        command.stdout(io::stderr());
        command
    };
    if run(&mut apt_get(args)).is_ok() {
        return Ok(());
    }
    run(&mut apt_get(&["update"]))?;
    run(&mut apt_get(args))
}

/// Where the program `name` is: `name` itself when it is a path (made absolute), else the
/// first executable of that name in PATH.
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return std::path::absolute(name).ok();
    }
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        fs::metadata(candidate)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Runs `command` quietly and returns its standard output; fails unless it succeeds.
fn output_of(command: &mut Command) -> Result<String> {
    let what = xtask::command_line(command);
    let output =
        command.stderr(Stdio::inherit()).output().with_context(|| format!("run {what}"))?;
    ensure!(output.status.success(), "`{what}` failed ({})", output.status);
    String::from_utf8(output.stdout).with_context(|| format!("read the output of {what}"))
}

/// The prepared guest: a kernel, and an initramfs with busybox and the modules but no /init
/// (each boot appends it: see [`write_initrd`]).
#[derive(Debug)]
struct Guest {
    kernel: PathBuf,
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

/// Returns the cached guest, preparing it first when it is missing. It is built in a staging
/// folder and renamed into place, so a crash never leaves half a guest and a parallel xtask
/// finds either none or all of it.
fn prepared_guest() -> Result<Guest> {
    static PREPARING: Mutex<()> = Mutex::new(());
    let _one_preparer = PREPARING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = project_root().join(format!(".crabbox/vm/guest-{}", modules_key()));
    if !dir.is_dir() {
        eprintln!("preparing the test guest in {} (once)", dir.display());
        let staging = dir.with_file_name(format!("guest.staging-{}", process::id()));
        let built = build_guest(&staging).and_then(|()| {
            fs::rename(&staging, &dir)
                .with_context(|| format!("move the new guest into {}", dir.display()))
        });
        if let Err(err) = built {
            let _ = fs::remove_dir_all(&staging);
            if !dir.is_dir() {
                return Err(err);
            }
        }
    }
    Ok(Guest::in_dir(&dir))
}

fn build_guest(staging: &Path) -> Result<()> {
    fs::create_dir_all(staging).with_context(|| format!("create {}", staging.display()))?;
    let guest = Guest::in_dir(staging);
    let busybox = find_static_busybox()?;
    let scratch = TempDir::new()?;
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

/// The package that Debian's `linux-image-amd64` currently depends on, such as
/// `linux-image-6.1.0-56-amd64`. This generic flavour has 9p as a module; the faster-booting
/// `-cloud-amd64` flavour has no 9p at all.
fn kernel_package() -> Result<String> {
    let depends = output_of(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))
        .context("look up Debian's kernel package (the test guest needs a Debian host)")?;
    kernel_package_in(&depends).context(
        "apt-cache names no linux-image-<version>-amd64 for linux-image-amd64; \
         run `apt-get update` and try again",
    )
}

/// The first `Depends: linux-image-<digit>…` of `apt-cache depends` output.
fn kernel_package_in(depends: &str) -> Option<String> {
    depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|package| {
            package
                .strip_prefix("linux-image-")
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(String::from)
}

/// Downloads the kernel package into `scratch` and unpacks it there; returns the unpacked tree.
/// Installing it instead would change the host's boot setup (and run update-initramfs).
fn unpack_kernel_package(package: &str, release: &str, scratch: &Path) -> Result<PathBuf> {
    // apt downloads as its user _apt, who cannot write to our private scratch folder; it then
    // warns and downloads as root. Say so up front.
    apt_get(&["download", "-o", "APT::Sandbox::User=root", package], scratch)?;
    let deb = fs::read_dir(scratch)
        .with_context(|| format!("list {}", scratch.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let root = scratch.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    // The package ships no modules.dep (its postinst makes one); modprobe needs it.
    run(Command::new("depmod").arg("-b").arg(&root).arg(release))?;
    Ok(root)
}

/// Decompresses the ELF `vmlinux` out of a `vmlinuz`: an xz stream after the boot code. Run
/// by python3 with the arguments VMLINUZ VMLINUX; exits 1 if no stream yields an ELF file.
const EXTRACT_VMLINUX: &str = r#"
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
while start >= 0:
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        if elf.startswith(b"\x7fELF"):
            open(sys.argv[2], "wb").write(elf)
            sys.exit(0)
    except lzma.LZMAError:
        pass
    start = data.find(b"\xfd7zXZ\x00", start + 1)
sys.exit(1)
"#;

/// Writes the kernel qemu boots to `kernel`. Debian ships an xz-compressed bzImage, and under
/// TCG its own decompressor takes about 3 s of every boot. The uncompressed ELF inside it
/// boots directly instead, through its PVH entry point (`-kernel` accepts an ELF with a PVH
/// note). When it cannot be extracted, the vmlinuz itself is booted.
fn extract_vmlinux(vmlinuz: &Path, kernel: &Path) -> Result<()> {
    let extracted =
        Command::new("python3").args(["-c", EXTRACT_VMLINUX]).arg(vmlinuz).arg(kernel).status();
    if extracted.is_ok_and(|status| status.success()) {
        return Ok(());
    }
    eprintln!("note: no vmlinux found in {}; the guest boots it compressed", vmlinuz.display());
    fs::copy(vmlinuz, kernel)
        .with_context(|| format!("copy {} to {}", vmlinuz.display(), kernel.display()))?;
    Ok(())
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

/// A fresh directory /tmp/crabbox-vm-XXXXXX, removed with everything in it when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let template = "/tmp/crabbox-vm-XXXXXX";
        mkdtemp(template).map(TempDir).with_context(|| format!("create a directory {template}"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes the guest's orders into the work share `work`: `run.sh`, the script that runs the
/// command, and `host-tmp-dirs`, the host's directories under /tmp that the command needs.
fn write_orders(
    work: &Path,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<()> {
    let script = run_script(program, args, env, cwd)?;
    fs::write(work.join("run.sh"), script).context("write run.sh into the work share")?;
    let dirs: String =
        host_tmp_dirs(&[program, cwd]).iter().map(|dir| format!("{}\n", dir.display())).collect();
    fs::write(work.join("host-tmp-dirs"), dirs).context("write host-tmp-dirs into the work share")
}

/// The script stage 2 of [`INIT`] runs: go to `cwd`, export `env` and VMTEST=1, and exec the
/// program by its absolute path (the guest's PATH need not find it).
fn run_script(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<String> {
    let utf8 = |path: &Path| {
        path.to_str().map(quoted).with_context(|| format!("{} is not UTF-8", path.display()))
    };
    let mut script = format!("set -e\ncd {}\n", utf8(cwd)?);
    let env = env.iter().map(|(name, value)| (name.as_str(), value.as_str()));
    for (name, value) in env.chain([("VMTEST", "1")]) {
        script += &format!("export {}\n", quoted(&format!("{name}={value}")));
    }
    let command: Vec<String> =
        std::iter::once(utf8(program)?).chain(args.iter().map(|arg| quoted(arg))).collect();
    script += &format!("exec {}\n", command.join(" "));
    Ok(script)
}

/// `text` as one word for a POSIX shell: in single quotes, each `'` written as `'\''`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The guest's /tmp is a tmpfs of its own, where everything works (an overlay's upper
/// directory, for one, cannot be on the overlay that is the guest's root). So the host's /tmp
/// is hidden, but a program or working directory may live there (a CARGO_TARGET_DIR, say):
/// these are the entries of /tmp that hold `paths`, which [`INIT`] binds in from the host.
fn host_tmp_dirs(paths: &[&Path]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for path in paths {
        if let Ok(under_tmp) = path.strip_prefix("/tmp") {
            if let Some(first) = under_tmp.components().next() {
                let dir = Path::new("/tmp").join(first);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

/// The initramfs of one boot: the cached one with [`INIT`] appended as a second archive.
/// The kernel unpacks all the archives of an initrd in turn, so a change to INIT needs no new
/// cache.
fn write_initrd(guest: &Guest, work: &Path) -> Result<PathBuf> {
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

/// How long a guest may take to start the command. It usually takes about 3 s, also under
/// TCG; a guest that takes much longer has hung while booting.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a guest may run in all before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How many of the console's last lines an error shows.
const CONSOLE_TAIL: usize = 20;

/// How a boot ended, as the host saw it.
#[derive(Debug)]
struct Boot {
    ending: Ending,
    /// The last lines of the console, for errors
    console_tail: Vec<String>,
}

#[derive(Debug)]
enum Ending {
    /// qemu exited by itself, with this status
    Exited(ExitStatus),
    /// The command had not started after [`START_TIMEOUT`], so qemu was killed
    Stuck,
    /// The guest ran past [`RUN_TIMEOUT`], so qemu was killed
    TimedOut,
}

/// Boots the guest and waits for it to power off, echoing its console to stderr. The command
/// has started once its output file exists in the work share.
fn boot_guest(kernel: &Path, initrd: &Path, layout: CgroupLayout, work: &Path) -> Result<Boot> {
    let mut qemu = qemu_command(kernel, initrd, layout, work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start qemu-system-x86_64")?;
    let serial = qemu.stdout.take().expect("qemu's stdout is piped");
    let console = thread::spawn(move || echo_console(serial));
    let ending = wait_for_guest(&mut qemu, &work.join("stdout"))?;
    let console_tail = console.join().unwrap_or_default();
    Ok(Boot { ending, console_tail })
}

fn qemu_command(kernel: &Path, initrd: &Path, layout: CgroupLayout, work: &Path) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(accelerator());
    qemu.args(["-machine", "q35", "-m", "2048", "-smp", "2"]);
    // The serial port is the only device the guest prints to: stdio. -no-reboot makes the
    // guest's `reboot -f` (or a panic, with panic=-1) end qemu, faster than an ACPI poweroff.
    qemu.args(["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"]);
    qemu.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    // softlockup_panic=1: a guest kernel that reports a soft lockup panics, and so ends at
    // once, instead of spinning until RUN_TIMEOUT.
    let cmdline = format!(
        "console=ttyS0 quiet loglevel=3 panic=-1 softlockup_panic=1 {}",
        layout.kernel_options()
    );
    qemu.arg("-append").arg(cmdline);
    // Seeds the guest's random numbers from the host's, so nothing in it waits for entropy.
    qemu.args(["-device", "virtio-rng-pci"]);
    // multidevs=remap keeps inode numbers unique across the host's file systems; the work
    // share keeps the guest's owners and modes (passthrough needs qemu to run as root).
    let share = "security_model=passthrough,multidevs=remap";
    qemu.arg("-virtfs").arg(format!("local,path={},mount_tag=work,{share}", work.display()));
    qemu.args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]);
    qemu
}

/// KVM when the CPU can virtualize and /dev/kvm is ours; TCG, emulation in software,
/// otherwise. /dev/kvm alone proves nothing: some nested hosts (PVM) have one that cannot run
/// a stock kernel, but their CPUs show no vmx or svm flag.
fn accelerator() -> [&'static str; 4] {
    let cpu_virtualizes = fs::read_to_string("/proc/cpuinfo").is_ok_and(|cpuinfo| {
        cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|flag| flag == "vmx" || flag == "svm"))
    });
    if cpu_virtualizes && access("/dev/kvm", AccessFlags::W_OK).is_ok() {
        ["-accel", "kvm", "-cpu", "host"]
    } else {
        ["-accel", "tcg,thread=multi", "-cpu", "max"]
    }
}

/// Waits for qemu to exit, and kills it if the command has not `started` in time or if it
/// runs too long.
fn wait_for_guest(qemu: &mut Child, started: &Path) -> Result<Ending> {
    let booted = Instant::now();
    let ending = loop {
        if let Some(status) = qemu.try_wait().context("wait for qemu")? {
            return Ok(Ending::Exited(status));
        }
        if booted.elapsed() > START_TIMEOUT && !started.exists() {
            break Ending::Stuck;
        }
        if booted.elapsed() > RUN_TIMEOUT {
            break Ending::TimedOut;
        }
        thread::sleep(Duration::from_millis(50));
    };
    qemu.kill().context("kill qemu")?;
    qemu.wait().context("wait for qemu to die")?;
    Ok(ending)
}

/// Copies the guest's console to our stderr line by line, without the noise, and returns its
/// last lines.
fn echo_console(serial: impl Read) -> Vec<String> {
    let mut tail = VecDeque::with_capacity(CONSOLE_TAIL);
    for line in BufReader::new(serial).split(b'\n') {
        let Ok(line) = line else { break };
        let Some(line) = console_line(&line) else { continue };
        eprintln!("{line}");
        if tail.len() == CONSOLE_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

/// A line of the console without escape codes, carriage returns and firmware chatter, or None
/// if nothing else is left. Qemu starts even a `-kernel` through SeaBIOS, which clears the
/// screen, prints its banner, and then `Booting from ROM..` with no newline, so the guest's
/// first line of output follows it. `reboot: Restarting system` is the kernel's last word on
/// `reboot -f`, an emergency message that `quiet` does not silence.
fn console_line(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw).replace('\r', "");
    let line = without_escape_codes(&text);
    let line = line.strip_prefix("Booting from ROM..").unwrap_or(&line);
    let noise = line.starts_with("SeaBIOS (version")
        || line.ends_with("reboot: Restarting system")
        || (line.is_empty() && !text.is_empty());
    (!noise).then(|| line.to_string())
}

/// `text` without ANSI escape sequences: `ESC [ … final byte`, or `ESC` and one character.
fn without_escape_codes(text: &str) -> String {
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    chars.by_ref().find(|c| ('@'..='~').contains(c));
                }
            }
            c => clean.push(c),
        }
    }
    clean
}

/// What the command left in the work share: its exit status and its output. Without an exit
/// status, the guest never got to run it to the end: says why, as far as the host knows.
fn read_result(work: &Path, boot: &Boot) -> Result<GuestRun> {
    let exit_code = work.join("exit-code");
    let Ok(status) = fs::read_to_string(&exit_code) else {
        let why = match boot.ending {
            Ending::Stuck => format!(
                "the guest had not started the command after {} s (it hung while booting)",
                START_TIMEOUT.as_secs()
            ),
            Ending::TimedOut => format!(
                "the guest ran longer than {} min and was killed",
                RUN_TIMEOUT.as_secs() / 60
            ),
            Ending::Exited(status) => format!(
                "the guest stopped without reporting the command's exit status (qemu {status}; \
                 a kernel panic or a failure in /init?)"
            ),
        };
        if boot.console_tail.is_empty() {
            bail!("{why}; its console stayed silent");
        }
        bail!("{why}; the last lines of its console:\n{}", boot.console_tail.join("\n"));
    };
    let status = status
        .trim()
        .parse()
        .with_context(|| format!("read the exit status in {}", exit_code.display()))?;
    let stdout_file = work.join("stdout");
    let stdout = fs::read(&stdout_file)
        .with_context(|| format!("read the command's output in {}", stdout_file.display()))?;
    Ok(GuestRun { status, stdout: String::from_utf8_lossy(&stdout).into_owned() })
}

/// The guest's PID 1, a busybox shell script. Stage 1 runs in the initramfs: it mounts the
/// kernel's file systems, loads the modules, mounts the cgroups in the layout the kernel
/// command line asks for, and switches into the host's root. Stage 2 runs there: it runs the
/// host's `run.sh` from the work share, writes back its exit status, and ends the guest.
const INIT: &str = r#"#!/bin/busybox sh
vm=/run/crabbox-vm    # busybox, this script and the work share, kept across switch_root
share=$vm/work
cg=/sys/fs/cgroup

fail() {
    echo "crabbox-vm: $*" >&2
    reboot -f    # ends qemu (-no-reboot); the host finds no exit status and says so
}

mount_kernel_filesystems() {
    mkdir -p /proc /sys /dev /tmp /run
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mount -t tmpfs -o mode=0755 tmpfs /run
}

load_modules() {
    while read -r module; do
        insmod "$module" || echo "crabbox-vm: cannot load $module" >&2
    done < /etc/modules.load
}

# The value of NAME=VALUE on the kernel command line
kernel_option() {
    for option in $(cat /proc/cmdline); do
        case "$option" in "$1"=*) echo "${option#*=}" ;; esac
    done
}

# Pure cgroup v2, mounted as systemd mounts it, with every controller enabled for the root's
# children. Then init moves into a leaf, /init.scope, as systemd does: the command starts in
# a cgroup of its own, next to which it can create cgroups with any controller.
mount_cgroup_v2() {
    mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $cg || fail "cannot mount cgroup2"
    for controller in $(cat $cg/cgroup.controllers); do
        echo "+$controller" > $cg/cgroup.subtree_control ||
            echo "crabbox-vm: cannot enable the $controller controller" >&2
    done
    mkdir $cg/init.scope
    echo $$ > $cg/init.scope/cgroup.procs
}

# cgroup v1 as Debian's systemd mounts it: a read-only tmpfs with one hierarchy per enabled
# controller of /proc/cgroups (cpu and cpuacct share one, as do net_cls and net_prio, with a
# link for each name), and a named hierarchy for systemd.
mount_cgroup_v1() {
    mount -t tmpfs -o mode=0755 tmpfs $cg
    while read -r controller hierarchy count enabled; do
        [ "$enabled" = 1 ] || continue    # also skips the header line
        case "$controller" in
            cpu | cpuacct) hierarchy=cpu,cpuacct ;;
            net_cls | net_prio) hierarchy=net_cls,net_prio ;;
            *) hierarchy=$controller ;;
        esac
        [ -d $cg/$hierarchy ] && continue
        mkdir $cg/$hierarchy
        mount -t cgroup -o $hierarchy cgroup $cg/$hierarchy ||
            echo "crabbox-vm: cannot mount the cgroup v1 hierarchy $hierarchy" >&2
    done < /proc/cgroups
    link_comounted cpu cpuacct
    link_comounted net_cls net_prio
    mkdir $cg/systemd
    mount -t cgroup -o none,name=systemd cgroup $cg/systemd
    mount -o remount,ro $cg
}

link_comounted() {
    [ -d "$cg/$1,$2" ] || return 0
    ln -s "$1,$2" $cg/$1
    ln -s "$1,$2" $cg/$2
}

mount_shares() {
    mkdir -p $share /mnt/hostroot
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none work $share ||
        fail "cannot mount the work share"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /mnt/hostroot ||
        fail "cannot mount the host's root"
}

# The new root is the host's root under an overlay whose upper layer is a tmpfs: the guest
# sees the host's files at their paths and may write anywhere, and its writes vanish with it.
# The mounts made here (cgroups included) are bound into it; switch_root keeps them.
enter_host_root() {
    mkdir -p /mnt/layer /newroot
    mount -t tmpfs tmpfs /mnt/layer
    mkdir /mnt/layer/upper /mnt/layer/work
    mount -t overlay -o lowerdir=/mnt/hostroot,upperdir=/mnt/layer/upper,workdir=/mnt/layer/work \
        overlay /newroot || fail "cannot mount the overlay on the host's root"
    for dir in /proc /sys /dev /tmp /run; do
        mount -o rbind $dir /newroot$dir || fail "cannot bind $dir into the new root"
    done
    bind_host_tmp_dirs
    cp /bin/busybox /init $vm/
    # switch_root, not chroot: the kernel refuses user namespaces to a chrooted process.
    exec switch_root /newroot $vm/busybox sh $vm/init stage2
}

# The guest's /tmp is a tmpfs of its own; the host's directories there that the command needs
# are bound in, read-only.
bind_host_tmp_dirs() {
    while read -r dir; do
        if [ -d "/mnt/hostroot$dir" ]; then mkdir -p "/newroot$dir"; else touch "/newroot$dir"; fi
        mount -o bind "/mnt/hostroot$dir" "/newroot$dir" || fail "cannot bind $dir from the host"
    done < $share/host-tmp-dirs
}

stage1() {
    /bin/busybox --install -s /bin
    export PATH=/bin
    mount_kernel_filesystems
    load_modules
    case "$(kernel_option crabbox.cgroup)" in
        v1) mount_cgroup_v1 ;;
        *) mount_cgroup_v2 ;;
    esac
    ip link set lo up
    mount_shares
    enter_host_root
}

stage2() {
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    $vm/busybox sh $share/run.sh < /dev/null > $share/stdout 2> /dev/console
    echo $? > $share/exit-code
    # The share has no cache (cache=none), so once synced, all is on the host. It is not
    # unmounted: processes the command left running may still hold files in it open.
    sync
    $vm/busybox reboot -f
}

case "$1" in
    stage2) stage2 ;;
    *) stage1 ;;
esac
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_package_is_the_versioned_dependency() {
        let depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(kernel_package_in(depends).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        assert_eq!(kernel_package_in("linux-image-amd64\n  Depends: linux-base\n"), None);
    }

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

    #[test]
    fn the_run_script_quotes_everything() {
        let env = [("RUST_LOG".to_string(), "it's".to_string())];
        let args = ["-c".to_string(), "echo $HOME".to_string()];
        let script =
            run_script(Path::new("/bin/sh"), &args, &env, Path::new("/work/my dir")).unwrap();
        assert_eq!(
            script,
            "set -e\ncd '/work/my dir'\nexport 'RUST_LOG=it'\\''s'\nexport 'VMTEST=1'\n\
             exec '/bin/sh' '-c' 'echo $HOME'\n"
        );
    }

    #[test]
    fn host_tmp_dirs_are_the_top_entries_of_tmp() {
        let paths = [
            Path::new("/tmp/target/debug/xtask"),
            Path::new("/tmp/target"),
            Path::new("/work/main"),
        ];
        assert_eq!(host_tmp_dirs(&paths), [PathBuf::from("/tmp/target")]);
    }

    #[test]
    fn console_noise_is_dropped() {
        assert_eq!(console_line(b"\x1b[2J\x1bc\x1b[?7l"), None);
        assert_eq!(console_line(b"\x1bc\x1b[2JSeaBIOS (version 1.16.2-debian-1.16.2-1)\r"), None);
        assert_eq!(console_line(b"Booting from ROM..\r"), None);
        assert_eq!(console_line(b"Booting from ROM..output\r").as_deref(), Some("output"));
        assert_eq!(console_line(b"[    2.81] reboot: Restarting system\r"), None);
        assert_eq!(console_line(b"\x1b[1mbold\x1b[0m text\r").as_deref(), Some("bold text"));
        assert_eq!(console_line(b"\r").as_deref(), Some(""));
    }
}
