//! The guest's kernel: Debian's generic kernel package, downloaded with apt (not installed)
//! and unpacked, its modules indexed and its vmlinux taken out of the compressed image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use xtask::host_tools::apt_get;
use xtask::process::{output_of, run};

/// The package that Debian's `linux-image-amd64` currently depends on, such as
/// `linux-image-6.1.0-56-amd64`. This generic flavour has 9p as a module; the faster-booting
/// `-cloud-amd64` flavour has no 9p at all.
pub(super) fn kernel_package() -> Result<String> {
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
pub(super) fn unpack_kernel_package(
    package: &str,
    release: &str,
    scratch: &Path,
) -> Result<PathBuf> {
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
const EXTRACT_VMLINUX: &str = include_str!("extract_vmlinux.py");

/// Writes the kernel qemu boots to `kernel`. Debian ships an xz-compressed bzImage, and under
/// TCG its own decompressor takes about 3 s of every boot. The uncompressed ELF inside it
/// boots directly instead, through its PVH entry point (`-kernel` accepts an ELF with a PVH
/// note). When it cannot be extracted, the vmlinuz itself is booted.
pub(super) fn extract_vmlinux(vmlinuz: &Path, kernel: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_package_is_the_versioned_dependency() {
        let depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(kernel_package_in(depends).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        assert_eq!(kernel_package_in("linux-image-amd64\n  Depends: linux-base\n"), None);
    }
}
