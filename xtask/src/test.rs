//! `cargo xtask test`: everything CI checks, in one command. Formatting, clippy, the unit
//! tests, every chapter's checks as root, the exercise guarantee (see [`guarantee`]), and
//! the book.

use anyhow::{bail, Result};

use crate::book;
use xtask::process::run;

use crate::cargo::{build_chapter, cargo};
use crate::chapters;
use crate::check::{report, run_checks, Place, Tally};
use crate::guarantee;
use crate::network;

pub fn test() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--quiet",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--quiet", "--workspace", "--exclude", "crabbox-tests"]))?;
    let all = chapters::all()?;
    let mut tally = Tally::default();
    for chapter in &all {
        chapter.ensure_check_files()?;
        println!("\n== chapter {}: the exercise guarantee", chapter.number);
        tally.add(&guarantee::guarantee(chapter, &all)?);
        let binaries = build_chapter(chapter, &all)?;
        for place in Place::all_for(chapter) {
            println!("\n== chapter {}: checks{}", chapter.number, place.label());
            tally.add(&report(chapter, &run_checks(chapter, &binaries, &[], place)?, place)?);
        }
    }
    println!("\n== the bridge network goes");
    network::network_rm()?;
    println!("\n== the book");
    book::book(false)?;
    println!("\n{}", tally.summary());
    if tally.failed > 0 || tally.skipped > 0 {
        bail!("not everything passed");
    }
    Ok(())
}
