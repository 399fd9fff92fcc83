//! The layer that `cargo xtask bench` unpacks: about 250 MB of mixed files (many small ones
//! in nested directories, a few big ones, symlinks, hard links), the same bytes on every
//! machine, and not zeros, so that inflating them is real work. Made once: GNU tar writes
//! the tree, and `umoci raw add-layer` gzips it into the image `bench:latest` of an OCI
//! layout under `.crabbox/bench/`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;
use xtask::host_tools::ensure_tools;
use xtask::process::run;
use xtask::{build_in_place, project_root};

/// The image in the layout.
pub const REFERENCE: &str = "bench:latest";

/// Small files, spread over `DIRS` directories two levels deep.
const SMALL_FILES: usize = 16_000;
const DIRS: usize = 256;
/// Big files, of `BIG_FILE_SIZE` bytes each.
const BIG_FILES: usize = 8;
const BIG_FILE_SIZE: usize = 16 << 20;
/// Every how many small files one gets a symlink to it, and one a hard link.
const SYMLINK_EVERY: usize = 10;
const HARD_LINK_EVERY: usize = 20;

/// The generated layer, in its OCI layout.
#[derive(Debug)]
pub struct BenchLayer {
    pub layout: PathBuf,
    /// The gzip blob, which GNU tar unpacks too.
    pub blob: PathBuf,
    /// The hex of the layer's diff id: the name crabbox's store gives its unpacked copy.
    pub diff_id_hex: String,
    /// The size of the uncompressed layer, for the throughput.
    pub uncompressed_bytes: u64,
}

/// The layer, made first when it is missing (whole or not at all, as [`build_in_place`]
/// makes it). The folder's name says which recipe made it.
pub fn ensure_bench_layer() -> Result<BenchLayer> {
    let dir = project_root().join(".crabbox/bench/layer-v1");
    build_in_place(&dir, |staging| {
        ensure_tools([("umoci", "umoci"), ("tar", "tar")])?;
        fs::create_dir_all(staging)?;
        make_layer(staging)
    })?;
    read_layer(&dir)
}

/// Generates the tree in a temporary folder, has GNU tar archive it (with fixed owners and
/// times, so the archive is the same every time), and adds the archive as the one layer of
/// [`REFERENCE`] in `dir/layout`.
fn make_layer(dir: &Path) -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("crabbox-bench-layer-").tempdir()?;
    let tree = scratch.path().join("tree");
    eprintln!("generating the bench's layer in {}", tree.display());
    generate_tree(&tree)?;
    let archive = scratch.path().join("layer.tar");
    let mut tar = Command::new("tar");
    tar.arg("--create").arg("--file").arg(&archive).arg("--directory").arg(&tree).args([
        "--sort=name",
        "--numeric-owner",
        "--owner=0",
        "--group=0",
        "--mtime=@1700000000",
        ".",
    ]);
    run(&mut tar)?;
    let uncompressed = fs::metadata(&archive)?.len();
    let layout = format!("layout:{REFERENCE}");
    let umoci = |args: &[&str]| {
        let mut command = Command::new("umoci");
        command.args(args).current_dir(dir);
        command
    };
    run(&mut umoci(&["init", "--layout", "layout"]))?;
    run(&mut umoci(&["new", "--image", &layout]))?;
    run(umoci(&["raw", "add-layer", "--image", &layout]).arg(&archive))?;
    fs::write(dir.join("uncompressed-bytes"), uncompressed.to_string())?;
    Ok(())
}

/// Reads back where the layer's blob is and what its diff id is: index.json names the
/// manifest, which names the layer and the config, which holds the diff ids.
fn read_layer(dir: &Path) -> Result<BenchLayer> {
    let layout = dir.join("layout");
    let blob_of = |digest: &Value| -> Result<PathBuf> {
        let digest = digest.as_str().context("a digest is a string")?;
        let hex = digest.strip_prefix("sha256:").context("a sha256 digest")?;
        Ok(layout.join("blobs/sha256").join(hex))
    };
    let json = |path: &Path| -> Result<Value> {
        let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let index = json(&layout.join("index.json"))?;
    let manifest = json(&blob_of(&index["manifests"][0]["digest"])?)?;
    let config = json(&blob_of(&manifest["config"]["digest"])?)?;
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().context("the layer's diff id")?;
    let size = fs::read_to_string(dir.join("uncompressed-bytes"))?;
    Ok(BenchLayer {
        blob: blob_of(&manifest["layers"][0]["digest"])?,
        diff_id_hex: diff_id.trim_start_matches("sha256:").to_string(),
        uncompressed_bytes: size.trim().parse().context("the layer's uncompressed size")?,
        layout,
    })
}

/// Writes the tree: small files of 256 B to 32 KiB (some executable) in `DIRS` folders,
/// big files half text and half noise, and links to some of the small files.
fn generate_tree(tree: &Path) -> Result<()> {
    let mut noise = Noise(0x00c0_ffee_cafe_f00d);
    let words = noise.vocabulary();
    for i in 0..SMALL_FILES {
        let path = small_file(tree, i);
        fs::create_dir_all(path.parent().expect("a file has a folder"))?;
        let size = 256 << noise.below(8);
        fs::write(&path, noise.text(&words, size)).with_context(|| path.display().to_string())?;
        if i % 7 == 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
    }
    let links = tree.join("links");
    fs::create_dir_all(&links)?;
    for i in (0..SMALL_FILES).step_by(SYMLINK_EVERY) {
        let target = small_file(Path::new(".."), i);
        symlink(target, links.join(format!("symlink-{i}")))?;
    }
    for i in (0..SMALL_FILES).step_by(HARD_LINK_EVERY) {
        fs::hard_link(small_file(tree, i), links.join(format!("hardlink-{i}")))?;
    }
    let big = tree.join("big");
    fs::create_dir_all(&big)?;
    for i in 0..BIG_FILES {
        let mut contents = Vec::with_capacity(BIG_FILE_SIZE);
        while contents.len() < BIG_FILE_SIZE {
            contents.extend(noise.text(&words, 64 << 10));
            contents.extend(noise.bytes(64 << 10));
        }
        fs::write(big.join(format!("big-{i}")), contents)?;
    }
    Ok(())
}

/// Where small file `i` lives below `root`: `tree/dir-07/sub-03/file-1234`.
fn small_file(root: &Path, i: usize) -> PathBuf {
    let dir = i % DIRS;
    root.join(format!("dir-{:02}/sub-{:02}/file-{i}", dir / 16, dir % 16))
}

/// A deterministic pseudo-random stream (xorshift64*): the same tree on every machine.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 512 made-up words of 2 to 11 letters, which text is written with.
    fn vocabulary(&mut self) -> Vec<Vec<u8>> {
        (0..512)
            .map(|_| (0..2 + self.below(10)).map(|_| b'a' + self.below(26) as u8).collect())
            .collect()
    }

    /// `size` bytes of words, a line every 16 words or so: text that gzip shrinks about
    /// threefold, as it does source and configuration files.
    fn text(&mut self, words: &[Vec<u8>], size: usize) -> Vec<u8> {
        let mut text = Vec::with_capacity(size + 16);
        while text.len() < size {
            let word = self.next();
            text.extend_from_slice(&words[(word % words.len() as u64) as usize]);
            text.push(if word >> 60 == 0 { b'\n' } else { b' ' });
        }
        text.truncate(size);
        text
    }

    /// `size` bytes that gzip cannot shrink, as in compiled or compressed files.
    fn bytes(&mut self, size: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(size + 8);
        while bytes.len() < size {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(size);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_is_the_same_every_time_and_text_is_made_of_words() {
        let (mut one, mut other) = (Noise(7), Noise(7));
        let words = one.vocabulary();
        assert_eq!(words, other.vocabulary());
        let text = one.text(&words, 4096);
        assert_eq!(text, other.text(&words, 4096));
        assert_eq!(text.len(), 4096);
        assert!(text.iter().all(|&b| b.is_ascii_lowercase() || b == b' ' || b == b'\n'));
        let bytes = one.bytes(4096);
        assert!(bytes.iter().filter(|&&b| b == 0).count() < 100, "noise, not zeros");
    }
}
