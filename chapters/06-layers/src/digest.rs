//! Content addresses: `sha256:` and 64 lower-case hex digits. A digest from an image names a
//! file in the store, so it is checked before it becomes part of a path, and the bytes it
//! names are checked against it before they are trusted.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Checks `text` before anything uses it: only sha256, only lower-case hex.
    pub fn parse(text: &str) -> Result<Digest> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            bail!("`{text}` is not a sha256 digest (sha256: and 64 hex digits)");
        };
        if hex.len() != 64 || !hex.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            bail!("`{text}` is not a sha256 digest (sha256: and 64 lower-case hex digits)");
        }
        Ok(Digest(text.to_string()))
    }

    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex(&hasher.finalize())))
    }

    /// The 64 hex digits: the file name of a blob, a layer or an image.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, as `docker images` shows an id.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Fails unless `bytes` have this digest; `what` names them in the error.
    pub fn verify(&self, bytes: &[u8], what: &str) -> Result<()> {
        check(self, &Digest::of_bytes(bytes), what)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Digest> {
        Digest::parse(text)
    }
}

/// Fails unless what was read has the digest that was expected.
pub fn check(expected: &Digest, actual: &Digest, what: &str) -> Result<()> {
    if expected != actual {
        bail!("{what} is corrupt or was tampered with: its digest is {actual}, not {expected}");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Hashes what passes through it, read or written.
#[derive(Debug)]
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The digest and the size of everything that passed.
    pub fn finish(self) -> (Digest, u64, T) {
        (Digest::from_hasher(self.hasher), self.bytes, self.inner)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_in_lower_case_hex_is_a_digest() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().hex(), "a".repeat(64));
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:../../{}", "a".repeat(58)),
            "sha256:".to_string(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_a_stream_gives_the_digest_of_its_bytes() {
        let mut hashing = Hashing::new(&b"hello"[..]);
        io::copy(&mut hashing, &mut io::sink()).unwrap();
        let (digest, size, _) = hashing.finish();
        assert_eq!(digest, Digest::of_bytes(b"hello"));
        assert_eq!(size, 5);
        assert!(digest.verify(b"hellO", "the blob").is_err());
    }
}
