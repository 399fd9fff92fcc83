//! `docker save`'s archive: `manifest.json` lists each image's config file, its names
//! (RepoTags) and its layer tars, bottom first; `repositories` maps names to the top layer
//! for older tools. Docker's own files have no OCI manifest, so crabbox writes one for the
//! store; the config is kept byte for byte, so the image id is Docker's.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Seek};

use anyhow::{ensure, Context, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, MediaType};
use serde::{Deserialize, Serialize};

use super::{decompressed, layer_media_type, oci_digest, oci_manifest, Added, Sink, Source};
use crate::digest::{Digest, Hashing};
use crate::image::{normalize_name, Image};
use crate::layers::Layer;
use crate::store::Store;

/// One image of `manifest.json`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    /// The config's file: `<hex>.json`, or `blobs/sha256/<hex>` since docker 25.
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    /// The layer tars, bottom first: `<id>/layer.tar`, `<hex>.tar` or `blobs/sha256/<hex>`.
    layers: Vec<String>,
}

/// Loads every image manifest.json lists.
pub(super) fn load(added: &mut Added, source: &Source) -> Result<Vec<Image>> {
    let entries: Vec<ManifestEntry> = source.read_json("manifest.json")?;
    ensure!(!entries.is_empty(), "manifest.json lists no image");
    let mut images = Vec::new();
    for entry in &entries {
        images.extend(load_entry(added, source, entry)?);
    }
    Ok(images)
}

/// Loads one image: the config is read and checked first, then each layer stored as it is
/// (its media type from its first bytes), then an OCI manifest for them; the image is added
/// once under each of its names (or without a name). Returns it once per name.
fn load_entry(added: &mut Added, source: &Source, entry: &ManifestEntry) -> Result<Vec<Image>> {
    let names = entry.repo_tags.iter().flatten().map(|name| normalize_name(name));
    let names: Vec<String> = names.collect::<Result<_>>()?;
    let config = source.read_small(&entry.config)?;
    let id = Digest::of_bytes(&config);
    if let Some(named) = digest_in_name(&entry.config) {
        crate::digest::check(&named, &id, &format!("the config `{}`", entry.config))?;
    }
    let diff_ids = diff_ids(&config, &id)?;
    ensure!(
        diff_ids.len() == entry.layers.len(),
        "image {id}: manifest.json lists {} layers but its config names {} diff ids",
        entry.layers.len(),
        diff_ids.len()
    );
    // Every layer is found before any is stored.
    for layer in &entry.layers {
        source.read(layer).with_context(|| format!("image {id}: its layer `{layer}`"))?;
    }
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
        layers.push(store_layer(added, source, name, diff_id)?);
    }
    let manifest = oci_manifest(&config, layers)?;
    let image = Image::from_parts(None, &manifest, &config)?;
    if names.is_empty() {
        return Ok(vec![added.image(&image, &manifest, &config)?]);
    }
    let named = names.into_iter().map(|name| Image { name: Some(name), ..image.clone() });
    named.map(|named| added.image(&named, &manifest, &config)).collect()
}

/// The digest a file name of docker's gives its content: `<hex>.json` or
/// `blobs/sha256/<hex>`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let hex = name.strip_suffix(".json").or_else(|| name.strip_prefix("blobs/sha256/"))?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// The config's `rootfs.diff_ids`, each checked.
fn diff_ids(config: &[u8], id: &Digest) -> Result<Vec<Digest>> {
    let parsed = ImageConfiguration::from_reader(config)
        .with_context(|| format!("parse the config {id}"))?;
    let diff_ids = parsed.rootfs().diff_ids().iter();
    diff_ids
        .map(|diff_id| Digest::parse(diff_id).with_context(|| format!("a diff id of image {id}")))
        .collect()
}

/// Stores the layer tar `name` as it is. A plain tar's digest is its diff id, checked now; a
/// compressed one's diff id is checked when it is unpacked.
fn store_layer(
    added: &mut Added,
    source: &Source,
    name: &str,
    diff_id: &Digest,
) -> Result<Descriptor> {
    let (reader, _) = source.read(name)?;
    let media_type = layer_media_type(&mut BufReader::new(reader))?;
    let expected = (media_type == MediaType::ImageLayer).then_some(diff_id);
    let (digest, size) = added.blob_from(source, name, expected)?;
    Ok(Descriptor::new(media_type, size, oci_digest(&digest)?))
}

/// Writes the image as `docker save` does: the config as `<id-hex>.json`, each layer as an
/// uncompressed `<diff-id-hex>.tar`, manifest.json and repositories.
pub(super) fn save(store: &Store, image: &Image, sink: &mut Sink) -> Result<()> {
    let config_name = format!("{}.json", image.id.hex());
    sink.add_bytes(&config_name, &store.read_blob(&image.id)?)?;
    let layers = image.layers()?;
    let mut layer_names = Vec::new();
    for layer in &layers {
        let name = format!("{}.tar", layer.diff_id.hex());
        save_layer(store, layer, &name, sink)?;
        layer_names.push(name);
    }
    let entry = ManifestEntry {
        config: config_name,
        repo_tags: Some(image.name.iter().cloned().collect()),
        layers: layer_names,
    };
    sink.add_bytes("manifest.json", &serde_json::to_vec(&[entry])?)?;
    if let (Some(name), Some(top)) = (&image.name, layers.last()) {
        let (repository, tag) = name.rsplit_once(':').expect("a stored name has a tag");
        let repositories =
            BTreeMap::from([(repository, BTreeMap::from([(tag, top.diff_id.hex())]))]);
        sink.add_bytes("repositories", &serde_json::to_vec(&repositories)?)?;
    }
    Ok(())
}

/// Adds a layer as its plain tar. A compressed one is inflated into a temporary file
/// first (a tar member's size comes before its bytes), checked against its diff id.
fn save_layer(store: &Store, layer: &Layer, name: &str, sink: &mut Sink) -> Result<()> {
    let (blob, size) = store.open_blob(&layer.digest)?;
    if layer.media_type == MediaType::ImageLayer || layer.media_type.to_string().ends_with(".tar") {
        return sink.add(name, size, blob);
    }
    let mut tar = Hashing::new(tempfile::tempfile().context("create a temporary file")?);
    io::copy(&mut decompressed(&layer.media_type, size, blob)?, &mut tar)
        .with_context(|| format!("decompress layer {}", layer.digest))?;
    let (diff_id, size, mut tar) = tar.finish();
    crate::digest::check(&layer.diff_id, &diff_id, &format!("the tar of layer {}", layer.digest))?;
    tar.rewind()?;
    sink.add(name, size, tar)
}
