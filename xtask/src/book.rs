//! `cargo xtask book [--serve]`: builds and runs xtask-book, the crate that holds mdBook, so
//! that only this task (and `cargo xtask test`) ever compiles it.

use anyhow::Result;
use xtask::process::run;

use crate::cargo::{build, cargo};

pub fn book(serve: bool) -> Result<()> {
    let built = build(cargo().args(["build", "--quiet", "-p", "xtask-book"]), false)?;
    let mut book = std::process::Command::new(built.bin("xtask-book")?);
    if serve {
        book.arg("--serve");
    }
    run(&mut book)
}
