//! Layers, unpacked once per diff id into a directory of their own under the store's
//! `layers/`, and shared read-only by every image and container that uses them.

use oci_spec::image::MediaType;

use crate::digest::Digest;

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
