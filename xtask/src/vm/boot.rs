//! Booting the guest under qemu: its command line, its console, and how long it may take.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::unistd::{access, AccessFlags};

use super::{CgroupLayout, GuestRun};

/// How long a guest may take to start the command. It usually takes about 3 s, also under
/// TCG; a guest that takes much longer has hung while booting.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a guest may run in all before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How many of the console's last lines an error shows.
const CONSOLE_TAIL: usize = 20;

/// How a boot ended, as the host saw it.
#[derive(Debug)]
pub(super) struct Boot {
    pub(super) ending: Ending,
    /// The last lines of the console, for errors
    console_tail: Vec<String>,
}

#[derive(Debug)]
pub(super) enum Ending {
    /// qemu exited by itself, with this status
    Exited(ExitStatus),
    /// The command had not started after [`START_TIMEOUT`], so qemu was killed
    Stuck,
    /// The guest ran past [`RUN_TIMEOUT`], so qemu was killed
    TimedOut,
}

/// Boots the guest and waits for it to power off, echoing its console to stderr. The command
/// has started once its output file exists in the work share.
pub(super) fn boot_guest(
    kernel: &Path,
    initrd: &Path,
    layout: CgroupLayout,
    work: &Path,
) -> Result<Boot> {
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
pub(super) fn read_result(work: &Path, boot: &Boot) -> Result<GuestRun> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
