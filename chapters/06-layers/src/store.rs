//! The image store under `--root`: a real OCI image layout in `images/` (image-spec,
//! image-layout.md: `oci-layout`, `index.json`, `blobs/sha256/<hex>`), so skopeo and umoci
//! read what crabbox stored, plus the unpacked layers in `layers/<diff-id-hex>/`.
//!
//! Content addressing makes the store safe to share: a blob's name is the digest of its
//! bytes, checked when it is written and when it is read, so two images that share a layer
//! share one file and no one can change it under the other's name. Every change happens under
//! one lock (`store.lock`), and each is made visible by a rename, last: a blob appears in
//! `blobs/` only once verified, an image in `index.json` only once all its blobs are there.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder};

use crate::digest::{check, Digest, Hashing};
use crate::image::{normalize_name, Image};
use crate::layers::remove_layer;

/// The annotation that names an image in an OCI layout's index (image-spec, annotations.md).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The content of a layout's `oci-layout` file: the version of the layout it is.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The image store rooted at one directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

/// The store's lock: every command that changes blobs, index.json or layers holds it, so
/// concurrent loads and removals take turns. flock(2) ends with the process, so a killed
/// command never leaves it held.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

/// What [`Store::remove_image`] did, for the messages Docker prints.
#[derive(Debug)]
pub struct Removal {
    /// The names taken off the image.
    pub untagged: Vec<String>,
    /// The image's id, when no name is left and the image itself went.
    pub deleted: Option<Digest>,
}

impl Store {
    /// Opens the store at `root`, creating its directories and an empty layout when missing.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store { root: root.to_path_buf() };
        for dir in
            [store.blobs_dir(), store.ingest_dir(), store.layers_dir(), store.containers_dir()]
        {
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        if !store.layout_file().exists() || !store.index_file().exists() {
            let _lock = store.lock()?;
            store.create_layout_files()?;
        }
        Ok(store)
    }

    /// Writes `oci-layout` and an empty `index.json` unless they exist (under the lock, so an
    /// index another command just wrote is never replaced by an empty one).
    fn create_layout_files(&self) -> Result<()> {
        if !self.layout_file().exists() {
            write_atomically(&self.layout_file(), OCI_LAYOUT)?;
        }
        if !self.index_file().exists() {
            let empty = ImageIndexBuilder::default().schema_version(2u32).manifests(vec![]);
            self.write_index(&empty.build().context("build an empty index")?)?;
        }
        Ok(())
    }

    /// Waits for, then holds, the store's exclusive lock (flock(2) on `ROOT/store.lock`).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join("store.lock");
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path);
        let file = file.with_context(|| format!("open {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("lock {}", path.display()))?;
        Ok(StoreLock { _lock: lock })
    }

    /// `ROOT/images`: the OCI image layout.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `ROOT/layers`: the unpacked layers, one directory per diff id.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `ROOT/containers`: one directory per container.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `images/blobs/sha256`: every blob, named by the hex of its digest.
    fn blobs_dir(&self) -> PathBuf {
        self.images_dir().join("blobs/sha256")
    }

    /// `ROOT/ingest`: blobs being written, beside `images/` on one file system so that a
    /// rename moves them into place.
    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// `images/oci-layout`: the layout's version.
    fn layout_file(&self) -> PathBuf {
        self.images_dir().join("oci-layout")
    }

    /// `images/index.json`: the images, each a manifest named by `REF_NAME`.
    fn index_file(&self) -> PathBuf {
        self.images_dir().join("index.json")
    }

    /// The file of a blob. A [`Digest`] is valid by construction, so this never leaves
    /// `blobs/sha256/`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Removes what a killed load left in `ingest/`. The caller holds the lock, so no load
    /// that is still running writes there.
    pub fn clean_ingest(&self) -> Result<()> {
        let dir = self.ingest_dir();
        for entry in fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
            let path = entry?.path();
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        Ok(())
    }

    /// Stores the bytes `reader` gives as a blob and returns its digest and size. They are
    /// written to a file in `ingest/`, hashed on the way, and renamed into `blobs/` only once
    /// their digest is `expected` (when given): a blob that fails leaves nothing. A blob the
    /// store already has is not read again (its name is its content). The caller holds the
    /// lock.
    pub fn write_blob(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        if let Some(digest) = expected.filter(|digest| self.blob_path(digest).is_file()) {
            return Ok((digest.clone(), fs::metadata(self.blob_path(digest))?.len()));
        }
        let mut ingest = tempfile::Builder::new()
            .prefix("crabbox-blob-")
            .tempfile_in(self.ingest_dir())
            .context("create a file in the store's ingest/")?;
        let (digest, size) = copy_hashing(reader, ingest.as_file_mut())?;
        if let Some(expected) = expected {
            check(expected, &digest, &format!("blob {expected}"))?;
        }
        ingest.as_file().sync_all().context("write a blob to disk")?;
        let path = self.blob_path(&digest);
        ingest.persist(&path).with_context(|| format!("rename a blob to {}", path.display()))?;
        Ok((digest, size))
    }

    /// The bytes of a blob, checked against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).with_context(|| format!("read blob {digest}"))?;
        digest.verify(&bytes, &format!("blob {digest} in the store"))?;
        Ok(bytes)
    }

    /// A blob as a stream, for blobs too large to hold in memory, and its size; the read
    /// that reaches its end fails if its bytes were not the blob's.
    pub fn open_blob(&self, digest: &Digest) -> Result<(BlobReader, u64)> {
        let file =
            File::open(self.blob_path(digest)).with_context(|| format!("open blob {digest}"))?;
        let size = file.metadata()?.len();
        Ok((BlobReader { hashing: Some(Hashing::new(file)), expected: digest.clone() }, size))
    }

    /// The store's index.json.
    fn index(&self) -> Result<ImageIndex> {
        ImageIndex::from_file(self.index_file()).context("read the store's images/index.json")
    }

    /// Replaces index.json whole (a temporary file renamed over it): a reader sees the old
    /// index or the new one, never half of one.
    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let json = index.to_string_pretty().context("write the store's index")?;
        write_atomically(&self.index_file(), json.as_bytes())
    }

    /// Every image of the store, in the order of index.json; an image with two names is two.
    pub fn images(&self) -> Result<Vec<Image>> {
        let index = self.index()?;
        index.manifests().iter().map(|entry| self.image_of(entry)).collect()
    }

    /// The image an index entry names, read and checked.
    fn image_of(&self, entry: &Descriptor) -> Result<Image> {
        let digest = Digest::parse(entry.digest().as_ref()).context("an entry of index.json")?;
        Image::read(self, ref_name(entry), digest)
    }

    /// The image `reference` names: `NAME[:TAG]`, or a prefix of its id (`sha256:`
    /// optional, at least 4 hex digits) that no other image's id starts with.
    pub fn image(&self, reference: &str) -> Result<Image> {
        let mut images = self.images()?;
        let found = find(&images, reference)?;
        Ok(images.swap_remove(found[0]))
    }

    /// Adds `manifest`, whose blobs are all stored, to the index as `name` (`NAME:TAG`). The
    /// image that had the name keeps its others or, like Docker's, stays without a name.
    /// Then the blobs no image uses go: those of an entry the new one replaced, and those a
    /// killed load left. The caller holds the lock.
    pub fn add_image(&self, name: &str, manifest: Descriptor) -> Result<()> {
        self.add_index_entry(Some(&normalize_name(name)?), manifest)
    }

    /// Adds `manifest` to the index without a name, unless the image is there already (see
    /// [`Store::add_image`]).
    pub fn add_untagged_image(&self, manifest: Descriptor) -> Result<()> {
        self.add_index_entry(None, manifest)
    }

    /// Adds `manifest` to the index under `name` or without one: see [`Store::add_image`].
    fn add_index_entry(&self, name: Option<&str>, mut manifest: Descriptor) -> Result<()> {
        let digest = Digest::parse(manifest.digest().as_ref())?;
        let added = Image::read(self, name.map(String::from), digest)?;
        let mut index = self.index()?;
        let images = self.images()?;
        let mut entries: Vec<(Descriptor, Image)> =
            index.manifests().iter().cloned().zip(images).collect();
        for (entry, image) in &mut entries {
            if image.name.is_some() && image.name == added.name {
                untag(entry);
                image.name = None;
            }
        }
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        annotations.remove(REF_NAME);
        if let Some(name) = name {
            annotations.insert(REF_NAME.to_string(), name.to_string());
        }
        manifest.set_annotations(Some(annotations));
        entries.push((manifest, added));
        // An image without a name is listed once, and only while no name shows it (so the
        // entry just added goes again if its image is there already).
        let named: BTreeSet<Digest> = entries
            .iter()
            .filter(|(_, image)| image.name.is_some())
            .map(|(_, image)| image.id.clone())
            .collect();
        let mut listed = BTreeSet::new();
        entries.retain(|(_, image)| {
            image.name.is_some() || (!named.contains(&image.id) && listed.insert(image.id.clone()))
        });
        index.set_manifests(entries.iter().map(|(entry, _)| entry.clone()).collect());
        self.write_index(&index)?;
        self.collect_garbage(&entries.iter().map(|(_, image)| image).collect::<Vec<_>>())
    }

    /// Removes the image `reference` names: by name, that name; by id, every name of it.
    /// Once no name is left, the blobs and unpacked layers that no remaining image uses go
    /// too. An image a container still uses is refused, as Docker refuses it: the container's
    /// layers are the image's. The caller holds the lock.
    pub fn remove_image(&self, reference: &str) -> Result<Removal> {
        let mut index = self.index()?;
        let images = self.images()?;
        let found = find(&images, reference)?;
        let id = images[found[0]].id.clone();
        let remaining = images.iter().enumerate().filter(|(at, _)| !found.contains(at));
        let deleted = !remaining.clone().any(|(_, image)| image.id == id);
        if deleted {
            if let Some(container) = self.containers_using(&id)?.first() {
                bail!(
                    "image {} is used by container {container}; remove the container first \
                     (ch06 rm {container})",
                    images[found[0]].display_name()
                );
            }
        }
        let untagged = found.iter().filter_map(|&at| images[at].name.clone()).collect();
        let entries = index.manifests().iter().enumerate().filter(|(at, _)| !found.contains(at));
        index.set_manifests(entries.map(|(_, entry)| entry.clone()).collect());
        self.write_index(&index)?;
        let remaining: Vec<&Image> = remaining.map(|(_, image)| image).collect();
        self.collect_garbage(&remaining)?;
        Ok(Removal { untagged, deleted: deleted.then_some(id) })
    }

    /// The containers (`containers/<id>/container.json`, field `image_id`) made from the
    /// image `id`. A directory without that file is a container being made or removed.
    pub fn containers_using(&self, id: &Digest) -> Result<Vec<String>> {
        let mut using = Vec::new();
        let dir = self.containers_dir();
        for entry in fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
            let entry = entry?;
            let Ok(json) = fs::read(entry.path().join("container.json")) else { continue };
            let container: serde_json::Value = serde_json::from_slice(&json)
                .with_context(|| format!("read {}/container.json", entry.path().display()))?;
            if container["image_id"].as_str() == Some(id.as_str()) {
                using.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(using)
    }

    /// Removes the blobs and unpacked layers that none of `images` uses.
    fn collect_garbage(&self, images: &[&Image]) -> Result<()> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for image in images {
            blobs.extend([image.manifest_digest.clone(), image.id.clone()]);
            for layer in image.layers()? {
                blobs.insert(layer.digest);
                layers.insert(layer.diff_id);
            }
        }
        remove_unused(&self.blobs_dir(), &blobs, |digest| {
            fs::remove_file(self.blob_path(digest)).map_err(anyhow::Error::from)
        })?;
        let layers_dir = self.layers_dir();
        remove_unused(&layers_dir, &layers, |diff_id| remove_layer(&layers_dir, diff_id))
    }
}

/// Removes each entry of `dir` that is named by a digest's hex not in `keep`. Other names
/// (a layer still being unpacked, `.unpacking-…`) are not the collector's.
fn remove_unused(
    dir: &Path,
    keep: &BTreeSet<Digest>,
    remove: impl Fn(&Digest) -> Result<()>,
) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
            continue;
        };
        if !keep.contains(&digest) {
            remove(&digest).with_context(|| format!("remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The indexes in `images` of what `reference` names: one image by name, or every entry of
/// the one image whose id starts with the prefix.
fn find(images: &[Image], reference: &str) -> Result<Vec<usize>> {
    if !reference.starts_with("sha256:") {
        let name = normalize_name(reference);
        let named = name
            .as_ref()
            .ok()
            .and_then(|name| images.iter().position(|image| image.name.as_ref() == Some(name)));
        if let Some(at) = named {
            return Ok(vec![at]);
        }
    }
    let Some(prefix) = id_prefix(reference) else {
        let name = normalize_name(reference)?;
        bail!("no image {name} in the store; see `ch06 image ls`, or load it (ch06 image load)");
    };
    let found: Vec<usize> =
        (0..images.len()).filter(|&at| images[at].id.hex().starts_with(prefix)).collect();
    let ids: BTreeSet<&Digest> = found.iter().map(|&at| &images[at].id).collect();
    match ids.len() {
        0 => bail!("no image has an id starting with {prefix}; see `ch06 image ls`"),
        1 => Ok(found),
        _ => bail!(
            "the id prefix {prefix} is ambiguous: {} images have ids starting with it; give more \
             digits",
            ids.len()
        ),
    }
}

/// The hex digits of `reference` if it is an id or a prefix of one: `sha256:` optional,
/// then at least 4 lower-case hex digits.
fn id_prefix(reference: &str) -> Option<&str> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let is_hex = hex.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    (is_hex && (4..=64).contains(&hex.len())).then_some(hex)
}

/// The `NAME:TAG` an index entry carries, if any.
fn ref_name(entry: &Descriptor) -> Option<String> {
    entry.annotations().as_ref()?.get(REF_NAME).cloned()
}

/// Takes the name off an index entry.
fn untag(entry: &mut Descriptor) {
    if let Some(annotations) = entry.annotations().clone() {
        let annotations = annotations.into_iter().filter(|(key, _)| key != REF_NAME).collect();
        entry.set_annotations(Some(annotations));
    }
}

/// Copies `reader` into `file` and returns the digest and size of what was copied.
fn copy_hashing(mut reader: impl Read, file: &mut File) -> Result<(Digest, u64)> {
    let mut hashing = Hashing::new(BufWriter::new(file));
    io::copy(&mut reader, &mut hashing).context("write a blob")?;
    let (digest, size, mut writer) = hashing.finish();
    writer.flush().context("write a blob")?;
    Ok((digest, size))
}

/// Replaces `path` with `bytes` by a rename, so it is never seen half written.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a store file has a directory");
    let mut file = tempfile::Builder::new()
        .prefix("crabbox-")
        .tempfile_in(dir)
        .with_context(|| format!("create a file in {}", dir.display()))?;
    file.write_all(bytes).and_then(|()| file.as_file().sync_all())?;
    file.persist(path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

/// A blob read as a stream: the read that reaches its end fails unless the bytes had the
/// blob's digest, so a blob changed on disk is never passed on whole.
#[derive(Debug)]
pub struct BlobReader {
    hashing: Option<Hashing<File>>,
    expected: Digest,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hashing) = self.hashing.as_mut() else { return Ok(0) };
        let read = hashing.read(buf)?;
        if read == 0 && !buf.is_empty() {
            let (digest, _, _) = self.hashing.take().expect("checked above").finish();
            let what = format!("blob {} in the store", self.expected);
            check(&self.expected, &digest, &what).map_err(io::Error::other)?;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An image of no layers whose config differs by `author`, so each has its own id.
    fn image(name: Option<&str>, author: usize) -> Image {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","author":"{author}","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[]}}"#,
            config.len(),
            Digest::of_bytes(config.as_bytes())
        );
        Image::from_parts(name.map(String::from), manifest.as_bytes(), config.as_bytes()).unwrap()
    }

    /// Two images whose ids share their first 4 hex digits (found by trying: with 65536
    /// prefixes, a few hundred images share one).
    fn two_with_one_prefix() -> (Image, Image) {
        let mut seen: HashMap<String, Image> = HashMap::new();
        for author in 0.. {
            let image = image(None, author);
            let prefix = image.id.hex()[..4].to_string();
            if let Some(other) = seen.remove(&prefix) {
                return (other, image);
            }
            seen.insert(prefix, image);
        }
        unreachable!()
    }

    #[test]
    fn an_image_is_found_by_name_or_by_an_id_prefix() {
        let images = [image(Some("busybox:latest"), 1), image(Some("busybox:musl"), 1)];
        assert_eq!(find(&images, "busybox").unwrap(), [0]);
        assert_eq!(find(&images, "docker.io/library/busybox:musl").unwrap(), [1]);
        let id = images[0].id.clone();
        assert_eq!(find(&images, &id.hex()[..4]).unwrap(), [0, 1], "both names of one image");
        assert_eq!(find(&images, id.as_str()).unwrap(), [0, 1]);
        assert!(find(&images, "alpine").is_err());
        assert!(find(&images, &id.hex()[..3]).is_err(), "3 digits are a name, not an id");
    }

    #[test]
    fn a_blob_is_stored_only_with_its_digest_and_checked_when_read() {
        let dir = tempfile::Builder::new().prefix("crabbox-").tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let _lock = store.lock().unwrap();
        let wrong = Digest::of_bytes(b"something else");
        assert!(store.write_blob(&b"hello"[..], Some(&wrong)).is_err());
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0, "no blob");
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0, "nothing in ingest/");
        let (digest, size) = store.write_blob(&b"hello"[..], None).unwrap();
        assert_eq!((store.read_blob(&digest).unwrap(), size), (b"hello".to_vec(), 5));
        fs::write(store.blob_path(&digest), b"hellO").unwrap();
        assert!(store.read_blob(&digest).is_err());
        let (mut reader, _) = store.open_blob(&digest).unwrap();
        assert!(io::copy(&mut reader, &mut io::sink()).is_err(), "a stream of it fails too");
    }

    #[test]
    fn an_id_prefix_of_two_images_is_refused() {
        let (first, second) = two_with_one_prefix();
        let prefix = first.id.hex()[..4].to_string();
        let images = [first, second];
        let error = find(&images, &prefix).unwrap_err();
        assert!(format!("{error}").contains("ambiguous"), "{error}");
        assert_eq!(find(&images, images[1].id.hex()).unwrap(), [1]);
    }
}
