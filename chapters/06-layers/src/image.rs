//! An image as the store holds it: a manifest naming a config and layer blobs, and the
//! config that says how to run it. Both come from strangers, so they are checked here,
//! before any of their digests becomes a path or any layer is unpacked.

use anyhow::{bail, ensure, Context, Result};
use oci_spec::image::{ImageConfiguration, ImageManifest, MediaType};

use crate::digest::Digest;
use crate::layers::Layer;
use crate::store::Store;

/// The media types of a layer this store knows how to unpack: OCI's and Docker's names for
/// a tar, plain or compressed (image-spec, layer.md; Docker's image manifest v2.2).
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// The media types of a single image's manifest: OCI's, and Docker's v2.2 that an OCI
/// layout written by older tools may hold.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The most bytes a manifest, a config or an index may have: they are read into memory, so
/// a hostile one must not be able to make that unbounded.
pub const MAX_JSON_BYTES: u64 = 8 << 20;

/// One image: an entry of the store's index.json and the blobs it names.
#[derive(Debug, Clone)]
pub struct Image {
    /// `NAME:TAG`, or `None` for an image loaded without a name.
    pub name: Option<String>,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The config's digest, as Docker's image id: the same image loaded from any format has
    /// the same id, because every format carries the config byte for byte.
    pub id: Digest,
    pub config: ImageConfiguration,
}

impl Image {
    /// Reads and checks the image whose manifest is the blob `manifest_digest`.
    pub fn read(store: &Store, name: Option<String>, manifest_digest: Digest) -> Result<Image> {
        let manifest = store.read_blob(&manifest_digest)?;
        let id = config_digest(&parse_manifest(&manifest, &manifest_digest)?)?;
        let config = store.read_blob(&id)?;
        Image::from_parts(name, &manifest, &config)
    }

    /// Checks an image from the bytes of its manifest and config, before any of it is stored:
    /// the manifest is an image manifest, every digest is valid, the layers are layers and
    /// match the config's diff ids one to one, and the config is the one the manifest names.
    pub fn from_parts(name: Option<String>, manifest: &[u8], config: &[u8]) -> Result<Image> {
        let manifest_digest = Digest::of_bytes(manifest);
        let parsed = parse_manifest(manifest, &manifest_digest)?;
        let id = config_digest(&parsed)?;
        id.verify(config, &format!("the config of manifest {manifest_digest}"))?;
        let config = ImageConfiguration::from_reader(config)
            .with_context(|| format!("read the config {id} of manifest {manifest_digest}"))?;
        let image = Image { name, manifest_digest, manifest: parsed, id, config };
        image.layers()?;
        Ok(image)
    }

    /// The image's layers, bottom first: each layer of the manifest with the diff id at the
    /// same place in the config's `rootfs.diff_ids` (image-spec, config.md).
    pub fn layers(&self) -> Result<Vec<Layer>> {
        let descriptors = self.manifest.layers();
        let diff_ids = self.config.rootfs().diff_ids();
        ensure!(
            descriptors.len() == diff_ids.len(),
            "image {}: its manifest has {} layers but its config names {} diff ids; the image is \
             broken, make it again",
            self.id,
            descriptors.len(),
            diff_ids.len()
        );
        let pairs = descriptors.iter().zip(diff_ids);
        pairs
            .map(|(descriptor, diff_id)| {
                let digest = Digest::parse(descriptor.digest().as_ref())
                    .with_context(|| format!("a layer of image {}", self.id))?;
                let media_type = descriptor.media_type().clone();
                if !LAYER_MEDIA_TYPES.contains(&media_type.to_string().as_str()) {
                    bail!(
                        "image {}: layer {digest} has media type `{media_type}`, which is not a \
                         layer (a tar, plain, gzip or zstd)",
                        self.id
                    );
                }
                let diff_id = Digest::parse(diff_id).with_context(|| {
                    format!("the diff id of layer {digest} of image {}", self.id)
                })?;
                Ok(Layer { digest, diff_id, media_type, size: descriptor.size() })
            })
            .collect()
    }

    /// The bytes of the image's layers as stored, what `image ls` shows as its size.
    pub fn size(&self) -> u64 {
        self.manifest.layers().iter().map(|layer| layer.size()).sum()
    }

    /// The name for messages: `NAME:TAG`, or the id.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_string())
    }
}

/// Parses a manifest whose bytes have the digest `digest` and checks it describes one image.
fn parse_manifest(bytes: &[u8], digest: &Digest) -> Result<ImageManifest> {
    let manifest = ImageManifest::from_reader(bytes)
        .with_context(|| format!("manifest {digest} is not an image manifest"))?;
    ensure!(manifest.schema_version() == 2, "manifest {digest}: schemaVersion is not 2");
    if let Some(media_type) = manifest.media_type() {
        let media_type = media_type.to_string();
        ensure!(
            MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()),
            "manifest {digest} has media type `{media_type}`, not that of an image manifest"
        );
    }
    Ok(manifest)
}

/// The image id: the digest of the config the manifest names, checked before it is used.
fn config_digest(manifest: &ImageManifest) -> Result<Digest> {
    let config = manifest.config();
    let media_type = config.media_type();
    let known = [MediaType::ImageConfig.to_string(), DOCKER_CONFIG.to_string()];
    ensure!(
        known.contains(&media_type.to_string()),
        "the manifest's config has media type `{media_type}`, not that of an image config"
    );
    Digest::parse(config.digest().as_ref()).context("the config digest of a manifest")
}

/// Docker's media type of an image config, the same JSON as OCI's.
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Docker's rules for a name, applied to `reference`: a missing tag is `latest`, and
/// Docker's familiar names lose `docker.io/` and `library/` (`docker.io/library/busybox`
/// is `busybox:latest`, as `docker images` shows it). Other registries stay as they are:
/// podman's `localhost/busybox` names another image than `busybox`, so it keeps its prefix.
/// A reference by digest (`NAME@sha256:…`) is refused: the store names images by id.
pub fn normalize_name(reference: &str) -> Result<String> {
    ensure!(
        !reference.contains('@'),
        "`{reference}`: a reference by digest is not supported; name the image by NAME:TAG or \
         by its id (ch06 image ls)"
    );
    let (name, tag) = split_tag(reference);
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    check_name(reference, name)?;
    check_tag(reference, tag)?;
    Ok(format!("{name}:{tag}"))
}

/// `NAME[:TAG]` split at the tag's colon, which comes after the last `/` (the colon of a
/// registry's port, `localhost:5000/busybox`, does not start a tag).
fn split_tag(reference: &str) -> (&str, &str) {
    let last_slash = reference.rfind('/').map_or(0, |slash| slash + 1);
    match reference[last_slash..].rfind(':') {
        Some(colon) => (&reference[..last_slash + colon], &reference[last_slash + colon + 1..]),
        None => (reference, "latest"),
    }
}

/// A name is `/`-separated components of lower-case letters, digits and `.`, `_`, `-`; the
/// first of several may be a registry host with a port (Docker's reference grammar).
fn check_name(reference: &str, name: &str) -> Result<()> {
    let components: Vec<&str> = name.split('/').collect();
    for (index, component) in components.iter().enumerate() {
        let host = index == 0 && components.len() > 1;
        let allowed = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) || (host && c == ':')
        };
        let starts_well = component.starts_with(|c: char| c.is_ascii_alphanumeric());
        ensure!(
            starts_well && component.chars().all(allowed),
            "`{reference}` is not an image name: use lower-case letters, digits, `.`, `_` and \
             `-` between `/`, then an optional `:TAG`"
        );
    }
    Ok(())
}

/// A tag is 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
fn check_tag(reference: &str, tag: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    let starts_well = tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    ensure!(
        starts_well && tag.len() <= 128 && tag.chars().all(allowed),
        "`{reference}` has no valid tag: a tag is up to 128 letters, digits, `_`, `.` and `-`"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_as_docker_does() {
        for (reference, name) in [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("docker.io/library/busybox", "busybox:latest"),
            ("docker.io/busybox:musl", "busybox:musl"),
            ("docker.io/crabbox/tools:v1", "crabbox/tools:v1"),
            ("localhost/busybox", "localhost/busybox:latest"),
            ("localhost:5000/busybox", "localhost:5000/busybox:latest"),
            ("localhost:5000/busybox:x", "localhost:5000/busybox:x"),
        ] {
            assert_eq!(normalize_name(reference).unwrap(), name, "{reference}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for reference in
            ["BusyBox", "busybox:", "busybox:-x", "../etc", "a//b", "busybox@sha256:0", ""]
        {
            assert!(normalize_name(reference).is_err(), "{reference}");
        }
    }

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#;

    fn manifest(config: &str, layer_type: &str, layers: usize) -> String {
        let layer = format!(
            r#"{{"mediaType":"{layer_type}","size":1,"digest":"sha256:{}"}}"#,
            "b".repeat(64)
        );
        let layers = vec![layer; layers].join(",");
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[{layers}]}}"#,
            config.len(),
            Digest::of_bytes(config.as_bytes())
        )
    }

    #[test]
    fn an_image_is_its_manifest_and_config_checked() {
        let manifest = manifest(CONFIG, "application/vnd.oci.image.layer.v1.tar+gzip", 1);
        let image = Image::from_parts(None, manifest.as_bytes(), CONFIG.as_bytes()).unwrap();
        assert_eq!(image.id, Digest::of_bytes(CONFIG.as_bytes()));
        let layers = image.layers().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].diff_id.hex(), "a".repeat(64));
        assert_eq!(layers[0].digest.hex(), "b".repeat(64));
    }

    #[test]
    fn layers_and_diff_ids_must_match() {
        let two = manifest(CONFIG, "application/vnd.oci.image.layer.v1.tar", 2);
        let error = Image::from_parts(None, two.as_bytes(), CONFIG.as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("2 layers but its config names 1"), "{error:#}");
        let not_a_layer = manifest(CONFIG, "application/vnd.oci.image.config.v1+json", 1);
        let error = Image::from_parts(None, not_a_layer.as_bytes(), CONFIG.as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("which is not a layer"), "{error:#}");
    }

    #[test]
    fn the_config_must_be_the_one_the_manifest_names() {
        let manifest = manifest(CONFIG, "application/vnd.oci.image.layer.v1.tar", 1);
        let other = CONFIG.replace("amd64", "arm64");
        let error = Image::from_parts(None, manifest.as_bytes(), other.as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("tampered"), "{error:#}");
    }

    #[test]
    fn a_digest_that_is_a_path_is_refused() {
        let manifest = manifest(CONFIG, "application/vnd.oci.image.layer.v1.tar", 1)
            .replace(&format!("sha256:{}", "b".repeat(64)), "sha256:../../etc");
        assert!(Image::from_parts(None, manifest.as_bytes(), CONFIG.as_bytes()).is_err());
    }
}
