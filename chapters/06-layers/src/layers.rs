//! Layers, unpacked once per diff id into a directory of their own under the store's
//! `layers/`, and shared read-only by every image and container that uses them.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use anyhow::{Context, Result};
use oci_spec::image::MediaType;

use crate::compression::{decompress, Bound};
use crate::digest::{check, Digest, Hashing};
use crate::unpack::{remove, unpack_layer};

/// A layer being unpacked is `layers/.unpacking-<hex>` until it is complete and verified.
const UNPACKING_PREFIX: &str = ".unpacking-";

/// How much of a blob is read from disk at once.
const BLOB_BUFFER: usize = 1 << 20;

/// The chunks a layer's tar is handed over in, from the thread that decompresses it to
/// the one that writes its files, and how many may wait: memory stays at a few MiB.
const CHUNK: usize = 1 << 20;
const CHUNKS_AHEAD: usize = 4;

/// One layer of an image, as its manifest and config describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    pub media_type: MediaType,
    /// The blob's size, as the manifest declares it.
    pub size: u64,
}

// ANCHOR: unpack_layers
/// Unpacks the layers of an image, each `(blob, layer)` the blob's path in the store and
/// what the manifest says of it, and returns their directories, bottom first. A layer
/// unpacked before is reused; the others unpack in parallel. The caller holds the store's
/// lock: what a killed run left half-made is removed first.
pub fn unpack_layers(layers_dir: &Path, blobs: &[(PathBuf, Layer)]) -> Result<Vec<PathBuf>> {
    unpack_layers_bounded(layers_dir, blobs, Bound::DEFAULT)
}

/// `unpack_layers`, with each layer's uncompressed size cut off at `bound`.
pub fn unpack_layers_bounded(
    layers_dir: &Path,
    blobs: &[(PathBuf, Layer)],
    bound: Bound,
) -> Result<Vec<PathBuf>> {
    remove_unfinished(layers_dir)?;
    let missing = missing_layers(layers_dir, blobs);
    unpack_in_parallel(layers_dir, &missing, bound)?;
    Ok(blobs.iter().map(|(_, layer)| layers_dir.join(layer.diff_id.hex())).collect())
}
// ANCHOR_END: unpack_layers

/// Removes the unpacked layer `diff_id`, if it is there, whatever its tree holds.
pub fn remove_layer(layers_dir: &Path, diff_id: &Digest) -> Result<()> {
    if !layers_dir.join(diff_id.hex()).exists() {
        return Ok(());
    }
    let dir = File::open(layers_dir).with_context(|| format!("open {}", layers_dir.display()))?;
    remove(&dir, diff_id.hex().as_ref()).with_context(|| format!("remove the layer {diff_id}"))
}

/// Removes the `.unpacking-*` directories an unpack that was killed left behind.
fn remove_unfinished(layers_dir: &Path) -> Result<()> {
    let dir = File::open(layers_dir).with_context(|| format!("open {}", layers_dir.display()))?;
    for entry in fs::read_dir(layers_dir)? {
        let name = entry?.file_name();
        if name.as_encoded_bytes().starts_with(UNPACKING_PREFIX.as_bytes()) {
            remove(&dir, &name).with_context(|| {
                format!("remove the unfinished layer {}", layers_dir.join(&name).display())
            })?;
        }
    }
    Ok(())
}

/// The layers not unpacked yet, each once: an image may hold one layer twice (two steps
/// of a Dockerfile that changed nothing give the same empty layer).
fn missing_layers<'a>(
    layers_dir: &Path,
    blobs: &'a [(PathBuf, Layer)],
) -> Vec<&'a (PathBuf, Layer)> {
    let mut seen = HashSet::new();
    blobs
        .iter()
        .filter(|(_, layer)| seen.insert(&layer.diff_id))
        .filter(|(_, layer)| !layers_dir.join(layer.diff_id.hex()).exists())
        .collect()
}

/// Unpacks `layers` on as many threads as there are CPUs, each taking the next layer
/// when it is done with one. The first error is returned once all threads stopped.
fn unpack_in_parallel(layers_dir: &Path, layers: &[&(PathBuf, Layer)], bound: Bound) -> Result<()> {
    let threads = thread::available_parallelism().map_or(1, NonZero::get).min(layers.len());
    let next = AtomicUsize::new(0);
    let unpack_next = || -> Result<()> {
        while let Some((blob, layer)) = layers.get(next.fetch_add(1, Ordering::Relaxed)) {
            unpack_into_place(layers_dir, blob, layer, bound)?;
        }
        Ok(())
    };
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(unpack_next)).collect();
        workers.into_iter().try_for_each(|worker| worker.join().expect("an unpack thread panicked"))
    })
}

/// Unpacks one layer into `layers/.unpacking-<hex>`, and renames it `layers/<hex>` once it
/// is complete and verified; on an error, nothing of it stays.
fn unpack_into_place(layers_dir: &Path, blob: &Path, layer: &Layer, bound: Bound) -> Result<()> {
    let hex = layer.diff_id.hex();
    let unpacking = format!("{UNPACKING_PREFIX}{hex}");
    let temp = layers_dir.join(&unpacking);
    let result = fs::create_dir(&temp)
        .with_context(|| format!("create {}", temp.display()))
        .and_then(|()| unpack_verified(blob, layer, &temp, bound))
        .and_then(|()| {
            let dest = layers_dir.join(hex);
            fs::rename(&temp, &dest).with_context(|| format!("rename it to {}", dest.display()))
        });
    if result.is_err() && temp.exists() {
        let dir =
            File::open(layers_dir).with_context(|| format!("open {}", layers_dir.display()))?;
        remove(&dir, unpacking.as_ref())
            .with_context(|| format!("remove {} after a failed unpack", temp.display()))?;
    }
    result.with_context(|| format!("unpack layer {}", layer.digest))
}

// ANCHOR: unpack_verified
/// Unpacks the blob into `dest`, hashing the blob as it is read and the tar as it comes
/// out of the decompressor, and fails unless both digests are the ones the image names.
fn unpack_verified(blob: &Path, layer: &Layer, dest: &Path, bound: Bound) -> Result<()> {
    let file = File::open(blob).with_context(|| format!("open the blob {}", blob.display()))?;
    let mut blob_reader = BufReader::with_capacity(BLOB_BUFFER, Hashing::new(file));
    let tar = Hashing::new(decompress(&mut blob_reader, &layer.media_type, layer.size, bound)?);
    let diff_id = thread::scope(|scope| -> Result<Digest> {
        let (mut tar, reader) = read_ahead(scope, tar);
        unpack_layer(&mut tar, dest)?;
        // The diff id covers the whole tar, the zero blocks that end it too.
        io::copy(&mut tar, &mut io::sink()).context("read the end of the layer's tar")?;
        Ok(reader.join().expect("the layer's reader panicked").finish().0)
    })?;
    io::copy(&mut blob_reader, &mut io::sink()).context("read the end of the blob")?;
    let (digest, _, _) = blob_reader.into_inner().finish();
    check(&layer.digest, &digest, &format!("the blob {}", blob.display()))?;
    check(&layer.diff_id, &diff_id, "the layer's uncompressed tar (its diff id)")
}
// ANCHOR_END: unpack_verified

/// The reading end of `read_ahead`.
struct ReadAhead {
    chunks: Receiver<io::Result<Vec<u8>>>,
    /// Chunks read, sent back to be filled again.
    empty: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    read: usize,
}

/// Reads `source` to its end on a thread of its own, and hands its bytes over in chunks:
/// decompressing and hashing a layer then take one CPU while writing its files takes
/// another, as `gzip -d | tar -x` do. The thread returns `source` at the end, and stops
/// early when the `ReadAhead` is dropped.
fn read_ahead<'scope, R: Read + Send + 'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    mut source: R,
) -> (ReadAhead, thread::ScopedJoinHandle<'scope, R>) {
    let (full, chunks) = mpsc::sync_channel(CHUNKS_AHEAD);
    let (empty, emptied) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_AHEAD + 2);
    let reader = scope.spawn(move || {
        loop {
            let mut chunk = emptied.try_recv().unwrap_or_default();
            chunk.resize(CHUNK, 0);
            let filled = match fill(&mut source, &mut chunk) {
                Ok(0) => break,
                Ok(filled) => filled,
                Err(err) => {
                    let _ = full.send(Err(err));
                    break;
                }
            };
            chunk.truncate(filled);
            if full.send(Ok(chunk)).is_err() {
                break;
            }
        }
        source
    });
    (ReadAhead { chunks, empty, chunk: Vec::new(), read: 0 }, reader)
}

/// Reads into `buffer` until it is full or `source` ends; returns how much was read.
fn fill(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read == self.chunk.len() {
            let next = match self.chunks.recv() {
                Ok(next) => next?,
                // The reading thread is done: the tar ended.
                Err(mpsc::RecvError) => return Ok(0),
            };
            let _ = self.empty.try_send(std::mem::replace(&mut self.chunk, next));
            self.read = 0;
        }
        let count = buf.len().min(self.chunk.len() - self.read);
        buf[..count].copy_from_slice(&self.chunk[self.read..self.read + count]);
        self.read += count;
        Ok(count)
    }
}

impl crate::store::Store {
    /// The image's layers unpacked in the store (those not unpacked yet first), bottom
    /// first. The caller holds the store's lock.
    pub fn unpack_layers(&self, layers: &[Layer]) -> Result<Vec<PathBuf>> {
        let blobs: Vec<(PathBuf, Layer)> =
            layers.iter().map(|layer| (self.blob_path(&layer.digest), layer.clone())).collect();
        unpack_layers(&self.layers_dir(), &blobs)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;
    use std::time::Instant;

    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeVal;

    use super::*;
    use crate::unpack::tests::{Fixture, Tar};

    /// A store's `layers/` and blobs, beside a sentinel no layer may reach.
    struct Store {
        fixture: Fixture,
        layers: PathBuf,
    }

    impl Store {
        fn new() -> Store {
            let fixture = Fixture::new();
            let layers = fixture.dest.join("layers");
            fs::create_dir(&layers).unwrap();
            Store { fixture, layers }
        }

        /// Writes `tar`, gzipped, as a blob, and describes it as a manifest would.
        fn blob(&self, tar: &[u8]) -> (PathBuf, Layer) {
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(tar).unwrap();
            let blob = gzip.finish().unwrap();
            let digest = Digest::of_bytes(&blob);
            let path = self.fixture.dest.join(digest.hex());
            fs::write(&path, &blob).unwrap();
            let layer = Layer {
                digest,
                diff_id: Digest::of_bytes(tar),
                media_type: MediaType::ImageLayerGzip,
                size: blob.len() as u64,
            };
            (path, layer)
        }

        /// The names in `layers/`.
        fn layers(&self) -> Vec<String> {
            let mut names: Vec<_> = fs::read_dir(&self.layers)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn layers_unpack_in_parallel_once_and_are_reused() {
        let store = Store::new();
        let bottom = store.blob(&Tar::new().file("etc/motd", b"bottom").finish());
        let top = store.blob(&Tar::new().file("etc/.wh.motd", b"").finish());
        let blobs = [bottom.clone(), top.clone(), bottom.clone()];
        let dirs = unpack_layers(&store.layers, &blobs).unwrap();
        let dir = |layer: &Layer| store.layers.join(layer.diff_id.hex());
        assert_eq!(dirs, [dir(&bottom.1), dir(&top.1), dir(&bottom.1)]);
        assert_eq!(fs::read(dirs[0].join("etc/motd")).unwrap(), b"bottom");
        assert_eq!(store.layers().len(), 2);

        // Unpacked layers are not read again: their blobs may be gone.
        fs::remove_file(&bottom.0).unwrap();
        fs::remove_file(&top.0).unwrap();
        assert_eq!(unpack_layers(&store.layers, &blobs).unwrap(), dirs);
        store.fixture.assert_untouched();
    }

    #[test]
    fn a_wrong_diff_id_or_digest_leaves_nothing() {
        let store = Store::new();
        let tar = Tar::new().file("etc/motd", b"hello").finish();
        let (path, mut layer) = store.blob(&tar);
        layer.diff_id = Digest::of_bytes(b"another tar");
        let err = format!("{:#}", unpack_layers(&store.layers, &[(path, layer)]).unwrap_err());
        assert!(err.starts_with("unpack layer sha256:") && err.contains("diff id"), "{err}");
        assert!(store.layers().is_empty(), "{:?}", store.layers());

        let (path, mut layer) = store.blob(&tar);
        layer.digest = Digest::of_bytes(b"another blob");
        let err = format!("{:#}", unpack_layers(&store.layers, &[(path, layer)]).unwrap_err());
        assert!(err.contains("is corrupt or was tampered with"), "{err}");
        assert!(store.layers().is_empty(), "{:?}", store.layers());
        store.fixture.assert_untouched();
    }

    #[test]
    fn a_bomb_stops_at_the_bound_and_leaves_nothing() {
        let store = Store::new();
        let blob = store.blob(&Tar::new().file("zeros", &vec![0; 8 << 20]).finish());
        let bound = Bound { ratio: 10, floor: 1 << 20 };
        let err = unpack_layers_bounded(&store.layers, &[blob], bound).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("entry `zeros`") && err.contains("decompression bomb"), "{err}");
        assert!(store.layers().is_empty(), "{:?}", store.layers());
        store.fixture.assert_untouched();
    }

    #[test]
    fn a_hostile_layer_leaves_nothing_half_made() {
        let store = Store::new();
        let sentinel = store.fixture.sentinel();
        let tar =
            Tar::new().symlink("out", &sentinel).file("out/x", b"").file("../x", b"").finish();
        let err = format!("{:#}", unpack_layers(&store.layers, &[store.blob(&tar)]).unwrap_err());
        assert!(err.contains("entry `../x`"), "{err}");
        assert!(store.layers().is_empty(), "{:?}", store.layers());
        store.fixture.assert_untouched();
    }

    #[test]
    fn what_a_killed_unpack_left_is_removed() {
        let store = Store::new();
        let leftover = store.layers.join(format!("{UNPACKING_PREFIX}{}", "a".repeat(64)));
        fs::create_dir_all(leftover.join("half/made")).unwrap();
        std::os::unix::fs::symlink(store.fixture.sentinel(), leftover.join("out")).unwrap();
        let blob = store.blob(&Tar::new().file("f", b"").finish());
        unpack_layers(&store.layers, std::slice::from_ref(&blob)).unwrap();
        assert_eq!(store.layers(), [blob.1.diff_id.hex()]);
        store.fixture.assert_untouched();
    }

    #[test]
    fn a_removed_layer_is_gone_whatever_its_modes() {
        let store = Store::new();
        let tar = Tar::new()
            .entry(tar::EntryType::Directory, "./", "", b"", |h| h.set_mode(0))
            .entry(tar::EntryType::Directory, "ro/", "", b"", |h| h.set_mode(0o500))
            .file("ro/file", b"")
            .symlink("ro/out", &store.fixture.sentinel())
            .finish();
        let blob = store.blob(&tar);
        unpack_layers(&store.layers, std::slice::from_ref(&blob)).unwrap();
        remove_layer(&store.layers, &blob.1.diff_id).unwrap();
        assert!(store.layers().is_empty());
        remove_layer(&store.layers, &blob.1.diff_id).unwrap();
        store.fixture.assert_untouched();
    }

    /// Bytes that compress as a real layer's do: text with repeats, and random runs.
    fn mixed_bytes(seed: &mut u64, size: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(size);
        while bytes.len() < size {
            // xorshift64: cheap, and enough to defeat the compressor where it should.
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            if seed.is_multiple_of(3) {
                bytes.extend_from_slice(&seed.to_le_bytes());
            } else {
                bytes.extend_from_slice(
                    format!("line {} of a text file\n", *seed % 1000).as_bytes(),
                );
            }
        }
        bytes.truncate(size);
        bytes
    }

    /// A gzip layer of about `total` bytes of mixed files: many small ones, some large.
    fn mixed_layer(total: usize) -> Vec<u8> {
        let mut tar = Tar::new();
        let (mut seed, mut size, mut index) = (0x9e37_79b9_7f4a_7c15_u64, 0, 0);
        while size < total {
            let length = match index % 100 {
                0 => 2 << 20,
                1..=30 => 32 << 10,
                _ => 2 << 10,
            };
            if index % 50 == 0 {
                tar.dir(&format!("dir{}/", index / 50));
            }
            tar.file(&format!("dir{}/file{index}", index / 50), &mixed_bytes(&mut seed, length));
            size += length;
            index += 1;
        }
        tar.finish()
    }

    /// The speed target of the issue, measured here: `cargo test --release -p ch06-layers
    /// -- --ignored --nocapture unpack_speed` (as root). `cargo xtask bench` is the official one.
    #[test]
    #[ignore = "a benchmark: writes and unpacks about 250 MB"]
    fn unpack_speed_against_gnu_tar() {
        let store = Store::new();
        let tar = mixed_layer(250 << 20);
        let blob = store.blob(&tar);
        let files = tar::Archive::new(&tar[..]).entries().unwrap().count();
        println!(
            "layer: {} MB of tar in {files} entries, {} MB gzip",
            tar.len() >> 20,
            blob.1.size >> 20
        );

        let dir = &store.fixture.dest;
        // umoci unpacks an image: an OCI layout with this layer (gzipped by umoci).
        let (layout, image) = (dir.join("oci"), format!("{}:bench", dir.join("oci").display()));
        fs::write(dir.join("layer.tar"), &tar).unwrap();
        run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &image]));
        let add_layer = ["raw", "add-layer", "--image", &image];
        run(Command::new("umoci").args(add_layer).arg(dir.join("layer.tar")));

        // The best of three rounds, the tools in turn. Each starts after a sync(2), so that
        // the writeback of what the one before wrote does not slow it down, and in a layers
        // directory of its own: ext4 is slow to hand out inodes just freed (its
        // find_inode_bit checks recently_deleted), so removing a round's layer would weigh
        // on the next. CPU time is shown too: on a busy machine it varies less.
        let (mut gnu, mut umoci, mut crabbox) = (Took::NEVER, Took::NEVER, Took::NEVER);
        for round in 0..3 {
            let gnu_dir = dir.join(format!("gnu{round}"));
            fs::create_dir(&gnu_dir).unwrap();
            let mut tar_xzf = Command::new("tar");
            tar_xzf.arg("-xzf").arg(&blob.0).arg("-C").arg(&gnu_dir);
            gnu = gnu.best(took(UsageWho::RUSAGE_CHILDREN, || run(&mut tar_xzf)));
            let mut unpack = Command::new("umoci");
            unpack.args(["unpack", "--image", &image]).arg(dir.join(format!("bundle{round}")));
            umoci = umoci.best(took(UsageWho::RUSAGE_CHILDREN, || run(&mut unpack)));
            let layers = dir.join(format!("layers{round}"));
            fs::create_dir(&layers).unwrap();
            crabbox = crabbox.best(took(UsageWho::RUSAGE_SELF, || {
                unpack_layers(&layers, std::slice::from_ref(&blob)).unwrap();
            }));
        }
        println!("best of 3 (wall, cpu): tar -xzf {gnu}, umoci unpack {umoci}, crabbox {crabbox}");
        println!(
            "crabbox is {:.2}x tar -xzf and {:.2}x umoci unpack (wall), {:.2}x and {:.2}x (cpu)",
            gnu.wall / crabbox.wall,
            umoci.wall / crabbox.wall,
            gnu.cpu / crabbox.cpu,
            umoci.cpu / crabbox.cpu,
        );
    }

    /// How long a run took: wall-clock seconds, and CPU seconds (user and system).
    #[derive(Debug, Clone, Copy)]
    struct Took {
        wall: f64,
        cpu: f64,
    }

    impl Took {
        const NEVER: Took = Took { wall: f64::MAX, cpu: f64::MAX };

        fn best(self, other: Took) -> Took {
            Took { wall: self.wall.min(other.wall), cpu: self.cpu.min(other.cpu) }
        }
    }

    impl std::fmt::Display for Took {
        fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "{:.2}s, {:.2}s", self.wall, self.cpu)
        }
    }

    /// Times `work`, after a sync(2); `who` says whose CPU time it spends.
    fn took(who: UsageWho, work: impl FnOnce()) -> Took {
        nix::unistd::sync();
        let (start, cpu) = (Instant::now(), cpu_seconds(who));
        work();
        Took { wall: start.elapsed().as_secs_f64(), cpu: cpu_seconds(who) - cpu }
    }

    fn cpu_seconds(who: UsageWho) -> f64 {
        let usage = getrusage(who).unwrap();
        let seconds = |time: TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    }

    /// Runs `command`, and fails unless it succeeds.
    fn run(command: &mut Command) {
        let status = command.status().unwrap();
        assert!(status.success(), "{command:?}: {status}");
    }
}
