//! `cargo xtask vm-test`: runs a command in a throwaway Linux guest under qemu, so that cgroup
//! code can be tested on a pure cgroup v2 layout (the default) or a cgroup v1 layout, whatever
//! layout the host has, and without touching the host's cgroups.
//!
//! The guest is Debian's generic kernel with a small initramfs: a static busybox, the kernel
//! modules the chapters need, and the shell script init.sh as `/init`. That script mounts the
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
//!
//! The parts: [`kernel`] (the guest kernel), [`initramfs`] (what the guest boots from),
//! [`orders`] (what it is to run), [`boot`] (qemu, its console, and what the run left).

mod boot;
mod initramfs;
mod kernel;
mod orders;

use std::env;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process;

use anyhow::{Context, Result};
use xtask::host_tools::ensure_tools;
use xtask::process::find_program;

use boot::{boot_guest, read_result, Boot, Ending};
use initramfs::{prepared_guest, write_initrd};
use orders::write_orders;

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
    ensure_tools(HOST_TOOLS.iter().copied()).context("the test guest needs them")?;
    let guest = prepared_guest()?;
    // A fresh directory only we can enter, removed with everything in it when dropped.
    let work = tempfile::Builder::new().prefix("crabbox-vm-").tempdir_in("/tmp")?;
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
/// unpacks the kernel (see extract_vmlinux.py); busybox is found by `find_static_busybox`.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("modprobe", "kmod"),
    ("depmod", "kmod"),
    ("cpio", "cpio"),
    ("gzip", "gzip"),
    ("python3", "python3"),
];
