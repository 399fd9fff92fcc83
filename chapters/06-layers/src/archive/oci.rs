//! OCI image layouts (image-spec, image-layout.md), as a directory or in a tar (an
//! oci-archive): `oci-layout`, `index.json`, and `blobs/sha256/<hex>`. Blobs are copied
//! byte for byte, so the manifest keeps its digest and the image its id.

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use oci_spec::image::{
    Arch, Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType, Os,
};
use serde::Deserialize;

use super::{oci_digest, Added, Sink, Source};
use crate::digest::Digest;
use crate::image::{normalize_name, Image};
use crate::store::{Store, OCI_LAYOUT, REF_NAME};

/// The name containerd (and so docker 25's `docker save`) gives a manifest in full, where
/// `org.opencontainers.image.ref.name` may hold only the tag.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The file `oci-layout`.
#[derive(Debug, Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

/// Loads the images of the layout: those its index names, or every one when it names none
/// (those are loaded without a name). A `ref.name` is read as an image reference, so
/// umoci's `busybox` is `busybox:latest`.
pub(super) fn load(added: &mut Added, source: &Source) -> Result<Vec<Image>> {
    let layout: Layout = source.read_json("oci-layout")?;
    ensure!(
        layout.version.starts_with("1."),
        "the layout has imageLayoutVersion {}, not 1.x, which crabbox reads",
        layout.version
    );
    let index = ImageIndex::from_reader(&source.read_small("index.json")?[..])
        .context("parse index.json of the layout")?;
    let named: Vec<&Descriptor> =
        index.manifests().iter().filter(|entry| name_of(entry).is_some()).collect();
    let entries = if named.is_empty() { index.manifests().iter().collect() } else { named };
    ensure!(!entries.is_empty(), "the layout's index.json lists no image");
    entries.into_iter().map(|entry| load_entry(added, source, entry)).collect()
}

/// Loads the image one index entry names: its manifest and config are read and checked
/// first, then the layers, config and manifest stored, and the image added to the index.
fn load_entry(added: &mut Added, source: &Source, entry: &Descriptor) -> Result<Image> {
    let name = name_of(entry).map(|name| normalize_name(&name)).transpose()?;
    let descriptor = manifest_for_this_host(source, entry)?;
    let manifest = read_blob(source, &descriptor)?;
    let config = ImageManifest::from_reader(&manifest[..]).with_context(|| {
        format!("manifest {} of the layout is not an image manifest", descriptor.digest())
    })?;
    let config = read_blob(source, config.config())?;
    let image = Image::from_parts(name, &manifest, &config)?;
    for layer in image.manifest.layers() {
        added.described_blob(source, &blob_name(layer)?, layer)?;
    }
    added.image(&image, &manifest, &config)
}

/// The name an index entry gives its image, if any.
fn name_of(entry: &Descriptor) -> Option<String> {
    let annotations = entry.annotations().as_ref()?;
    annotations.get(CONTAINERD_NAME).or_else(|| annotations.get(REF_NAME)).cloned()
}

/// The image manifest an index entry stands for: itself, or, when it is an index of
/// images for several platforms, the one for this host's (or its only one).
fn manifest_for_this_host(source: &Source, entry: &Descriptor) -> Result<Descriptor> {
    if *entry.media_type() != MediaType::ImageIndex {
        return Ok(entry.clone());
    }
    let index = ImageIndex::from_reader(&read_blob(source, entry)?[..])
        .with_context(|| format!("parse the image index {}", entry.digest()))?;
    let this_host = |manifest: &&Descriptor| {
        let platform = manifest.platform().as_ref();
        platform.is_some_and(|p| *p.os() == Os::default() && *p.architecture() == Arch::default())
    };
    let found = match index.manifests().as_slice() {
        [only] => Some(only),
        manifests => manifests.iter().find(this_host),
    };
    let Some(found) = found.filter(|found| *found.media_type() != MediaType::ImageIndex) else {
        bail!(
            "the image index {} has no image for {}/{}",
            entry.digest(),
            Os::default(),
            Arch::default()
        );
    };
    Ok(found.clone())
}

/// `blobs/sha256/<hex>`, the file of the blob a descriptor names, once its digest is valid.
fn blob_name(descriptor: &Descriptor) -> Result<String> {
    Ok(format!("blobs/sha256/{}", Digest::parse(descriptor.digest().as_ref())?.hex()))
}

/// The small blob (a manifest, index or config) a descriptor names, checked.
fn read_blob(source: &Source, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let digest = Digest::parse(descriptor.digest().as_ref())?;
    let bytes = source.read_small(&blob_name(descriptor)?)?;
    ensure!(
        bytes.len() as u64 == descriptor.size(),
        "blob {digest} has {} bytes, but its descriptor says {}",
        bytes.len(),
        descriptor.size()
    );
    digest.verify(&bytes, &format!("blob {digest} of the layout"))?;
    Ok(bytes)
}

/// Writes the image as an OCI layout: its blobs as stored, and an index that names it.
pub(super) fn save(store: &Store, image: &Image, sink: &mut Sink) -> Result<()> {
    for layer in image.layers()? {
        let (reader, size) = store.open_blob(&layer.digest)?;
        sink.add(&format!("blobs/sha256/{}", layer.digest.hex()), size, reader)?;
    }
    let config = store.read_blob(&image.id)?;
    sink.add_bytes(&format!("blobs/sha256/{}", image.id.hex()), &config)?;
    let manifest = store.read_blob(&image.manifest_digest)?;
    sink.add_bytes(&format!("blobs/sha256/{}", image.manifest_digest.hex()), &manifest)?;
    let media_type = image.manifest.media_type().clone().unwrap_or(MediaType::ImageManifest);
    let mut entry =
        Descriptor::new(media_type, manifest.len() as u64, oci_digest(&image.manifest_digest)?);
    if let Some(name) = &image.name {
        entry.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), name.clone())])));
    }
    let index = ImageIndexBuilder::default().schema_version(2u32).manifests(vec![entry]).build()?;
    sink.add_bytes("index.json", index.to_string()?.as_bytes())?;
    sink.add_bytes("oci-layout", OCI_LAYOUT)
}
