//! Chapter 6: images. An image is a read-only stack of layers in a content-addressed store
//! (an OCI image layout); a container is that stack plus a writable layer of its own,
//! merged by overlayfs, and is described by an OCI runtime-spec `Spec`.

pub mod archive;
pub mod changes;
pub mod cli;
pub mod compression;
pub mod container;
pub mod digest;
pub mod image;
pub mod image_cli;
pub mod layers;
pub mod overlay;
pub mod resolve;
pub mod spec;
pub mod store;
pub mod unpack;
pub mod users;
