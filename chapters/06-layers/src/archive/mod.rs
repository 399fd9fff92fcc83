//! Image archives in and out of the store: `docker save` tars (classic, and the newer one
//! with OCI files beside), OCI layout directories and oci-archives, and a rootfs tar as a
//! one-layer image. Whatever the format, the config is stored byte for byte, so an image
//! keeps its id (the config's digest) through every format.

mod commit;
mod docker;
mod import;
mod oci;
mod sink;
mod source;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

use crate::compression::{decompress, Bound, Compression};
use crate::digest::Digest;
use crate::image::Image;
use crate::store::Store;

pub use commit::commit;
pub use import::import;
use sink::Sink;
use source::Source;

/// The formats `image save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// `docker save`'s tar: manifest.json, repositories, the config and layer tars
    DockerArchive,
    /// An OCI image layout in a tar
    OciArchive,
    /// An OCI image layout directory
    Oci,
}

/// Loads every image of the archive or layout at `path` into the store, and returns them.
/// A docker-archive is read through its manifest.json (even when it has OCI files beside,
/// as docker 25 writes: its RepoTags name the images fully, the OCI index only by tag; the
/// config, and so the id, is the same either way). The caller holds the lock and has
/// emptied the ingest; a load that fails removes the blobs it added.
pub fn load(store: &Store, path: &Path) -> Result<Vec<Image>> {
    let source = Source::open(path)?;
    let mut added = Added { store, blobs: Vec::new() };
    let loaded = if source.has("manifest.json") {
        docker::load(&mut added, &source)
    } else if source.has("oci-layout") {
        oci::load(&mut added, &source)
    } else {
        bail!(
            "{} is neither a docker-archive (no manifest.json) nor an OCI layout or oci-archive \
             (no oci-layout)",
            path.display()
        )
    };
    let loaded = loaded.with_context(|| format!("load {}", path.display()));
    if loaded.is_err() {
        added.remove_all();
    }
    loaded
}

/// Writes the image to `path` in `format`. The output appears whole or not at all.
pub fn save(store: &Store, image: &Image, path: &Path, format: SaveFormat) -> Result<()> {
    let mut sink = match format {
        SaveFormat::Oci => Sink::dir(path)?,
        SaveFormat::DockerArchive | SaveFormat::OciArchive => Sink::tar(path)?,
    };
    match format {
        SaveFormat::DockerArchive => docker::save(store, image, &mut sink)?,
        SaveFormat::Oci | SaveFormat::OciArchive => oci::save(store, image, &mut sink)?,
    }
    sink.finish().with_context(|| format!("write {}", path.display()))
}

/// The blobs one load added to the store, so that a load that fails takes them away again.
struct Added<'a> {
    store: &'a Store,
    blobs: Vec<Digest>,
}

impl Added<'_> {
    /// Stores a blob (see [`Store::write_blob`]) and remembers it if it is new.
    fn blob(&mut self, reader: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let had = expected.is_some_and(|digest| self.store.blob_path(digest).exists());
        let (digest, size) = self.store.write_blob(reader, expected)?;
        if !had {
            self.blobs.push(digest.clone());
        }
        Ok((digest, size))
    }

    /// Stores the archive's file `name`, a layer perhaps far larger than memory, with a
    /// progress bar when it is large.
    fn blob_from(
        &mut self,
        source: &Source,
        name: &str,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let (reader, size) = source.read(name)?;
        let progress = progress_bar(size, expected.map_or(name, |digest| digest.short()));
        let stored = self.blob(progress.wrap_read(reader), expected);
        progress.finish_and_clear();
        stored.with_context(|| format!("store `{name}` of the archive"))
    }

    /// Stores the blob a descriptor names, from the archive's file `name`, checking its size
    /// and digest.
    fn described_blob(
        &mut self,
        source: &Source,
        name: &str,
        descriptor: &Descriptor,
    ) -> Result<Digest> {
        let digest = Digest::parse(descriptor.digest().as_ref())?;
        // Checked before the copy: a hostile layout's file may be far larger than declared.
        let (_, size) = source.read(name)?;
        if size != descriptor.size() {
            bail!("blob {digest} has {size} bytes, but its descriptor says {}", descriptor.size());
        }
        self.blob_from(source, name, Some(&digest))?;
        Ok(digest)
    }

    /// Stores a checked image whose layers are stored already: its layers unpacked (a
    /// layer refused leaves no image listed), its config, then its manifest, then, last,
    /// its entry in the index, under its name or without one; from then on its blobs are
    /// the store's, not this load's to take back. Returns the image as the store now has
    /// it: if it had the image already, with its manifest.
    fn image(&mut self, image: &Image, manifest: &[u8], config: &[u8]) -> Result<Image> {
        self.store.unpack_layers(&image.layers()?)?;
        self.blob(config, Some(&image.id))?;
        self.blob(manifest, Some(&image.manifest_digest))?;
        let media_type = image.manifest.media_type().clone().unwrap_or(MediaType::ImageManifest);
        let size = manifest.len() as u64;
        let descriptor = Descriptor::new(media_type, size, oci_digest(&image.manifest_digest)?);
        match &image.name {
            Some(name) => self.store.add_image(name, descriptor)?,
            None => self.store.add_untagged_image(descriptor)?,
        }
        // The index names them now: a later image of the archive that fails keeps them.
        self.blobs.clear();
        self.store.image(image.name.as_deref().unwrap_or(image.id.as_str()))
    }

    /// Removes the blobs this load added: it failed, and no image uses them.
    fn remove_all(&mut self) {
        for digest in self.blobs.drain(..) {
            let _ = std::fs::remove_file(self.store.blob_path(&digest));
        }
    }
}

/// The OCI manifest crabbox writes for an image it converts or makes: the config and the
/// layers as stored.
fn oci_manifest(config: &[u8], layers: Vec<Descriptor>) -> Result<Vec<u8>> {
    let config_digest = oci_digest(&Digest::of_bytes(config))?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(MediaType::ImageConfig, config.len() as u64, config_digest))
        .layers(layers)
        .build()?;
    Ok(manifest.to_string()?.into_bytes())
}

/// A digest as oci-spec's type, for a descriptor.
fn oci_digest(digest: &Digest) -> Result<oci_spec::image::Digest> {
    digest.as_str().parse().with_context(|| format!("the digest {digest} for oci-spec"))
}

/// Layers below this size load too fast for a progress bar to help.
const PROGRESS_FROM_BYTES: u64 = 16 << 20;

/// A bar for copying `size` bytes of `what`. indicatif draws on stderr only when it is a
/// terminal, so a load in a script or a test prints nothing more.
fn progress_bar(size: u64, what: &str) -> ProgressBar {
    if size < PROGRESS_FROM_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size).with_message(format!("Loading layer {what}"));
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.with_style(style)
}

/// The OCI media type of a layer tar, from the first bytes of the blob.
fn layer_media_type(reader: &mut BufReader<impl Read>) -> Result<MediaType> {
    let start = reader.fill_buf().context("read the start of a layer")?;
    Ok(Compression::sniff(start).layer_media_type())
}

/// The tar inside a stored layer blob of `size` bytes, cut off at the unpacking's bound.
fn decompressed<'a>(
    media_type: &MediaType,
    size: u64,
    blob: impl Read + Send + 'a,
) -> Result<Box<dyn Read + Send + 'a>> {
    decompress(BufReader::new(blob), media_type, size, Bound::DEFAULT)
}
