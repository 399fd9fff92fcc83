//! `image import ROOTFS.tar NAME[:TAG]`: a rootfs tar (plain, gzip or zstd) as an image of
//! one layer, as `docker import` makes it. Like docker's, the config has no `Cmd` and no
//! `Env`: the tar says nothing about how to run it, so `ch06 run` needs a command. Nor has it
//! a creation time, so the same tar imports to the same id.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, Descriptor, HistoryBuilder, ImageConfigurationBuilder, MediaType, Os, RootFsBuilder,
};

use super::{decompressed, layer_media_type, oci_digest, oci_manifest, Added};
use crate::digest::{Digest, Hashing};
use crate::image::{normalize_name, Image};
use crate::store::Store;

/// Imports the tar at `rootfs` as the image `name`. The caller holds the lock and has
/// emptied the ingest; an import that fails removes the blobs it added.
pub fn import(store: &Store, rootfs: &Path, name: &str) -> Result<Image> {
    let name = normalize_name(name)?;
    let mut added = Added { store, blobs: Vec::new() };
    let imported = import_layer(&mut added, rootfs, &name);
    if imported.is_err() {
        added.remove_all();
    }
    imported.with_context(|| format!("import {}", rootfs.display()))
}

/// Stores the tar as it is (compressed or not) as the one layer of a new image `name`.
fn import_layer(added: &mut Added, rootfs: &Path, name: &str) -> Result<Image> {
    let file = File::open(rootfs).with_context(|| format!("open {}", rootfs.display()))?;
    let mut reader = BufReader::new(file);
    let media_type = layer_media_type(&mut reader)?;
    let (digest, size) = added.blob(reader, None)?;
    let diff_id = diff_id(added.store, &digest, &media_type)?;
    let config = config_for(&diff_id)?;
    let layer = Descriptor::new(media_type, size, oci_digest(&digest)?);
    let manifest = oci_manifest(&config, vec![layer])?;
    let image = Image::from_parts(Some(name.to_string()), &manifest, &config)?;
    added.image(&image, &manifest, &config)
}

/// The digest of the plain tar in the stored layer `digest`: the layer's own digest, or that
/// of its decompressed bytes.
fn diff_id(store: &Store, digest: &Digest, media_type: &MediaType) -> Result<Digest> {
    if *media_type == MediaType::ImageLayer {
        return Ok(digest.clone());
    }
    let (blob, size) = store.open_blob(digest)?;
    let mut tar = Hashing::new(decompressed(media_type, size, blob)?);
    io::copy(&mut tar, &mut io::sink()).context("decompress the rootfs tar")?;
    Ok(tar.finish().0)
}

/// The config of an imported image: this host's platform and one layer.
fn config_for(diff_id: &Digest) -> Result<Vec<u8>> {
    let rootfs =
        RootFsBuilder::default().typ("layers").diff_ids(vec![diff_id.to_string()]).build()?;
    let history = HistoryBuilder::default().created_by("ch06 image import").build()?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::default())
        .os(Os::default())
        .rootfs(rootfs)
        .history(vec![history])
        .build()?;
    Ok(config.to_string()?.into_bytes())
}
