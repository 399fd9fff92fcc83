//! A layer blob is a tar, plain or compressed with gzip or zstd, as its media type says. Here
//! the blob becomes a stream of the tar it holds, decompressed as it is read (memory stays
//! flat whatever the size), and cut off at a bound: a few kilobytes of gzip or zstd can
//! inflate to terabytes (a decompression bomb), and would fill the disk long before the
//! diff id, checked at the end, could tell that the layer is not the one the image names.

use std::fmt;
use std::io::{self, BufRead, Read};

use anyhow::{bail, Context, Result};
use oci_spec::image::MediaType;

/// Docker's media type for a gzip layer, as `docker push` writes it (image manifest v2,
/// schema 2), and the one for a layer a registry may not distribute.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The first bytes of a gzip member (RFC 1952, 2.3.1) and of a zstd frame (RFC 8878, 3.1.1).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// What the media type of a layer says; anything but a tar layer is refused.
    pub fn of_media_type(media_type: &MediaType) -> Result<Compression> {
        match media_type {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                Ok(Compression::Gzip)
            }
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
                Ok(Compression::Zstd)
            }
            MediaType::Other(other)
                if other == DOCKER_LAYER_GZIP || other == DOCKER_FOREIGN_LAYER_GZIP =>
            {
                Ok(Compression::Gzip)
            }
            other => bail!(
                "the media type {other} is not a layer's (a tar, plain, gzip or zstd: \
                 application/vnd.oci.image.layer.v1.tar[+gzip|+zstd])"
            ),
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn layer_media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// What the first bytes of a blob say it is.
    pub fn sniff(start: &[u8]) -> Compression {
        if start.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if start.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// How far a layer may inflate: `ratio` times the size its manifest declares, plus
/// `floor` (so that a small layer of one sparse file still fits). Past it, reading fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub ratio: u64,
    pub floor: u64,
}

impl Bound {
    /// Real layers inflate 2 to 10 times, so 100 times is far past any of them, and the
    /// floor of 1 GiB lets a small layer hold a large file of zeros. A bomb inflates
    /// further: gzip up to about 1000 times, zstd millions of times. A layer that really
    /// needs more is unpacked with a larger bound (`unpack_layers_bounded`).
    pub const DEFAULT: Bound = Bound { ratio: 100, floor: 1 << 30 };

    /// The most bytes a layer of `declared` compressed bytes may inflate to.
    pub fn limit(&self, declared: u64) -> u64 {
        declared.saturating_mul(self.ratio).saturating_add(self.floor)
    }
}

/// Decompresses `blob` as `media_type` says, or as its first bytes say when the media type
/// says a plain tar: a docker-archive names its layers `layer.tar` whatever they hold.
/// Reading fails once more than `bound.limit(declared)` bytes came out.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    mut blob: R,
    media_type: &MediaType,
    declared: u64,
    bound: Bound,
) -> Result<Box<dyn Read + Send + 'a>> {
    let compression = match Compression::of_media_type(media_type)? {
        Compression::None => Compression::sniff(blob.fill_buf().context("read the layer")?),
        compression => compression,
    };
    let tar: Box<dyn Read + Send + 'a> = match compression {
        Compression::None => Box::new(blob),
        // A gzip file may hold several members, one after another (pigz writes them).
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(blob).context("start a zstd decoder")?,
        ),
    };
    Ok(Box::new(Bounded { inner: tar, left: bound.limit(declared), declared, bound }))
}

/// A reader that fails once more than `left` bytes came through.
struct Bounded<R> {
    inner: R,
    left: u64,
    declared: u64,
    bound: Bound,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is enough to know: ask for no more.
        let wanted =
            buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        match self.left.checked_sub(read as u64) {
            Some(left) => {
                self.left = left;
                Ok(read)
            }
            None => Err(io::Error::other(TooLarge { declared: self.declared, bound: self.bound })),
        }
    }
}

/// The error of a layer that inflates past its bound.
#[derive(Debug)]
struct TooLarge {
    declared: u64,
    bound: Bound,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let Bound { ratio, floor } = self.bound;
        write!(
            f,
            "the layer inflates past {} bytes ({ratio} times the {} bytes its manifest declares, \
             plus {floor}): a decompression bomb, or a layer that needs a larger bound",
            self.bound.limit(self.declared),
            self.declared,
        )
    }
}

impl std::error::Error for TooLarge {}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const TAR: &[u8] = b"not really a tar, but bytes a decoder must give back as they were";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(bytes, 1).unwrap()
    }

    fn read_all(blob: &[u8], media_type: &MediaType, bound: Bound) -> io::Result<Vec<u8>> {
        let mut tar = decompress(blob, media_type, blob.len() as u64, bound).unwrap();
        let mut out = Vec::new();
        tar.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn each_media_type_gives_back_the_tar() {
        let docker = MediaType::Other(DOCKER_LAYER_GZIP.to_string());
        let cases = [
            (TAR.to_vec(), MediaType::ImageLayer),
            (gzip(TAR), MediaType::ImageLayerGzip),
            (gzip(TAR), docker),
            (zstd(TAR), MediaType::ImageLayerZstd),
            // A docker-archive's layer.tar may be compressed: the bytes tell.
            (gzip(TAR), MediaType::ImageLayer),
            (zstd(TAR), MediaType::ImageLayer),
        ];
        for (blob, media_type) in cases {
            assert_eq!(read_all(&blob, &media_type, Bound::DEFAULT).unwrap(), TAR, "{media_type}");
        }
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let blob = [gzip(b"first "), gzip(b"second")].concat();
        let tar = read_all(&blob, &MediaType::ImageLayerGzip, Bound::DEFAULT).unwrap();
        assert_eq!(tar, b"first second");
    }

    #[test]
    fn a_media_type_that_is_no_layer_is_refused() {
        let err = decompress(TAR, &MediaType::ImageConfig, 1, Bound::DEFAULT).err().unwrap();
        assert!(err.to_string().contains("is not a layer's"), "{err}");
    }

    #[test]
    fn a_bomb_stops_at_the_bound() {
        let bound = Bound { ratio: 10, floor: 4096 };
        for blob in [gzip(&vec![0; 1 << 20]), zstd(&vec![0; 1 << 20])] {
            let limit = bound.limit(blob.len() as u64);
            let mut tar =
                decompress(&blob[..], &MediaType::ImageLayer, blob.len() as u64, bound).unwrap();
            let mut out = Vec::new();
            let err = tar.read_to_end(&mut out).unwrap_err();
            assert!(err.to_string().contains("decompression bomb"), "{err}");
            assert!(out.len() as u64 <= limit, "{} bytes came out, past {limit}", out.len());
        }
    }

    #[test]
    fn a_layer_of_exactly_the_bound_is_read() {
        let bound = Bound { ratio: 0, floor: TAR.len() as u64 };
        assert_eq!(read_all(&gzip(TAR), &MediaType::ImageLayerGzip, bound).unwrap(), TAR);
    }
}
