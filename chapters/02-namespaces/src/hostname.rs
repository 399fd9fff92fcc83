//! The container's id and hostname: the UTS namespace gives it a hostname of its own.

use std::fs::File;
use std::io::Read;

use anyhow::{bail, Context, Result};

/// A new container id: 12 random hex digits, short enough to type, as docker shows them.
pub fn new_container_id() -> Result<String> {
    let bytes: [u8; 6] = random_bytes()?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// N bytes from the kernel's random number generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes)
}

/// Checks `name` against what a hostname may be: 1 to 64 letters, digits, `-` and `.`
/// (sethostname(2) accepts up to HOST_NAME_MAX = 64 bytes of anything; resolvers do not).
pub fn check_hostname(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    let edges_ok = !name.starts_with(['-', '.']) && !name.ends_with(['-', '.']);
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) || !edges_ok {
        bail!(
            "hostname `{name}` is not valid: use 1 to 64 letters, digits, '-' and '.', \
             not starting or ending with '-' or '.'"
        );
    }
    Ok(())
}

/// The container's hostname: the one asked for, once checked, or else its id.
pub fn hostname_or_id(requested: Option<&str>, id: &str) -> Result<String> {
    match requested {
        Some(name) => check_hostname(name).map(|()| name.to_string()),
        None => Ok(id.to_string()),
    }
}

// ANCHOR: set_hostname
/// Sets the hostname of the calling process's UTS namespace.
pub fn set_hostname(name: &str) -> Result<()> {
    // EXERCISE 2.2: set the hostname of this UTS namespace to `name` (sethostname(2))
    nix::unistd::sethostname(name).with_context(|| format!("set the hostname to {name}"))
    // END EXERCISE
}
// ANCHOR_END: set_hostname

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_12_hex_digits_and_differ() {
        let (a, b) = (new_container_id().unwrap(), new_container_id().unwrap());
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn hostnames_are_checked() {
        for good in ["box", "web-1", "a.b.c", &"x".repeat(64)] {
            assert!(check_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "-box", "box.", "has space", "ünï", &"x".repeat(65)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
