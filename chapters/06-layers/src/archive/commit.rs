//! `commit ID NAME[:TAG]`: a container's writable layer as a new image, as `docker commit`
//! makes it: the image's layers, the upper as one more layer (whiteouts and opaque markers
//! as a layer tar says them), and the image's config with that layer's diff id added.

use std::io::{Seek, SeekFrom};

use anyhow::{Context, Result};
use oci_spec::image::{Descriptor, HistoryBuilder, ImageConfiguration, MediaType};

use super::{oci_digest, oci_manifest, Added};
use crate::changes::write_layer;
use crate::container::{ContainerDir, ContainerRecord};
use crate::image::{normalize_name, Image};
use crate::store::Store;

// ANCHOR: commit
/// Makes the image `name` from the stopped container `dir`. The caller holds the lock.
pub fn commit(
    store: &Store,
    dir: &ContainerDir,
    record: &ContainerRecord,
    name: &str,
) -> Result<Image> {
    let name = normalize_name(name)?;
    let image = store.image(&record.image_id).with_context(|| {
        format!("the container's image {} is no longer in the store", record.image_id)
    })?;
    let mut added = Added { store, blobs: Vec::new() };
    let committed = commit_layer(&mut added, &image, dir, &name);
    if committed.is_err() {
        added.remove_all();
    }
    committed.with_context(|| format!("commit container {}", record.id))
}

fn commit_layer(added: &mut Added, image: &Image, dir: &ContainerDir, name: &str) -> Result<Image> {
    let mut tar = tempfile::tempfile_in(&dir.path).context("create a file for the layer")?;
    let (diff_id, size) = write_layer(&dir.upper(), &mut tar)?;
    tar.seek(SeekFrom::Start(0)).context("read the layer back")?;
    // An uncompressed layer: its blob's digest is its diff id.
    added.blob(&tar, Some(&diff_id))?;
    let config = config_with_layer(&image.config, diff_id.as_str())?;
    let mut layers = image.manifest.layers().clone();
    layers.push(Descriptor::new(MediaType::ImageLayer, size, oci_digest(&diff_id)?));
    let manifest = oci_manifest(&config, layers)?;
    let committed = Image::from_parts(Some(name.to_string()), &manifest, &config)?;
    added.image(&committed, &manifest, &config)
}
// ANCHOR_END: commit

/// The image's config with one more layer, and a line of history that says where it came
/// from. Everything else (Env, Entrypoint, Cmd, User, WorkingDir) carries over.
fn config_with_layer(config: &ImageConfiguration, diff_id: &str) -> Result<Vec<u8>> {
    let mut config = config.clone();
    let mut rootfs = config.rootfs().clone();
    rootfs.diff_ids_mut().push(diff_id.to_string());
    config.set_rootfs(rootfs);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(HistoryBuilder::default().created_by("ch06 commit").build()?);
    config.set_history(Some(history));
    Ok(config.to_string()?.into_bytes())
}
