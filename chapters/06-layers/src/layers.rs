//! Layers, unpacked once per diff id into a directory of their own under the store's
//! `layers/`, and shared read-only by every image and container that uses them.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    let mut tar = Hashing::new(decompress(&mut blob_reader, &layer.media_type, layer.size, bound)?);
    unpack_layer(&mut tar, dest)?;
    // The diff id covers the whole tar, the zero blocks that end it too.
    io::copy(&mut tar, &mut io::sink()).context("read the end of the layer's tar")?;
    let (diff_id, _, _) = tar.finish();
    io::copy(&mut blob_reader, &mut io::sink()).context("read the end of the blob")?;
    let (digest, _, _) = blob_reader.into_inner().finish();
    check(&layer.digest, &digest, &format!("the blob {}", blob.display()))?;
    check(&layer.diff_id, &diff_id, "the layer's uncompressed tar (its diff id)")
}
// ANCHOR_END: unpack_verified

impl crate::store::Store {
    /// The image's layers unpacked in the store (those not unpacked yet first), bottom
    /// first. The caller holds the store's lock.
    pub fn unpack_layers(&self, layers: &[Layer]) -> Result<Vec<PathBuf>> {
        let blobs: Vec<(PathBuf, Layer)> =
            layers.iter().map(|layer| (self.blob_path(&layer.digest), layer.clone())).collect();
        unpack_layers(&self.layers_dir(), &blobs)
    }
}
