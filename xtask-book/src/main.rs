//! `xtask-book`: the book's tooling, which `cargo xtask book` runs. It builds book/ with
//! mdBook as a library and crabbox's own preprocessor, and serves the result on 127.0.0.1.
//! It is a crate of its own so that no other task builds mdBook.

mod preprocess;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use mdbook_driver::MDBook;

#[derive(Debug, Parser)]
#[command(name = "xtask-book", about = "Build the crabbox book (cargo xtask book)")]
struct Cli {
    /// Then serve it on http://127.0.0.1:3000/
    #[arg(long)]
    serve: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let out = build()?;
    println!("the book is in {}", out.join("index.html").display());
    if cli.serve {
        serve::serve_dir(&out)?;
    }
    Ok(())
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask-book lives in the workspace")
        .into()
}

fn build() -> Result<PathBuf> {
    let root = project_root().join("book");
    let mut book = MDBook::load(&root).context("load the book")?;
    book.with_preprocessor(preprocess::Transcripts);
    book.build().context("build the book")?;
    Ok(book.build_dir_for("html"))
}
