//! Chapter 6 checks: images in an OCI-layout store, layers on overlayfs, hostile images.
//! Each topic is a module of its own in tests/ch06_layers/ (a crate root finds its modules
//! beside it, hence the paths).

mod common;
#[path = "ch06_layers/images.rs"]
mod images;
