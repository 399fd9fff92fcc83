//! `cargo xtask test`: everything CI checks, in one command. Formatting, clippy, the unit
//! tests, every chapter's checks as root, the exercise guarantee (each exercise stripped on
//! its own is caught by one of its checks), and the book.

use anyhow::{bail, Result};

use crate::book;
use crate::cargo::{build_chapter, cargo, run};
use crate::chapters::{self, Chapter};
use crate::check::{report, run_checks, Outcome, Tally};
use crate::exercises::{self, RestoreOnDrop};

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
    xtask::rootfs::ensure_default_rootfs()?;
    let all = chapters::all()?;
    let mut tally = Tally::default();
    for chapter in &all {
        println!("\n== chapter {}: every exercise is caught by a check", chapter.number);
        tally.add(&exercise_guarantee(chapter, &all)?);
        println!("\n== chapter {}: checks", chapter.number);
        build_chapter(chapter, &all)?;
        tally.add(&report(chapter, &run_checks(chapter, &[])?)?);
    }
    println!("\n== the book");
    book::build()?;
    println!("\n{}", tally.summary());
    if tally.failed > 0 || tally.skipped > 0 {
        bail!("not everything passed");
    }
    Ok(())
}

/// For each exercise of `chapter`: strip it alone, build, and expect at least one of its
/// checks to fail. The sources are restored afterwards, also when a step fails.
fn exercise_guarantee(chapter: &Chapter, all: &[Chapter]) -> Result<Tally> {
    let mut tally = Tally::default();
    for exercise in exercises::load(chapter)? {
        let file = exercises::files_with_regions(chapter)?.into_iter().find(|file| {
            std::fs::read_to_string(file)
                .is_ok_and(|text| text.contains(&format!("// EXERCISE {}:", exercise.id)))
        });
        let Some(file) = file else {
            bail!("exercise {} has no region in the sources", exercise.id)
        };
        let _restore = RestoreOnDrop::strip_one(&file, &exercise.id)?;
        if let Err(err) = build_chapter(chapter, all) {
            tally.failed += 1;
            println!(
                "FAIL exercise {}: the chapter does not build with it stripped: {err:#}",
                exercise.id
            );
            continue;
        }
        let outcomes = run_checks(chapter, &exercise.checks)?;
        let caught: Vec<&String> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Fail { .. }))
            .map(|(name, _)| name)
            .collect();
        if caught.is_empty() {
            tally.failed += 1;
            println!("FAIL exercise {}: stripped, and none of its checks failed", exercise.id);
        } else {
            tally.passed += 1;
            println!("PASS exercise {} is caught by {}", exercise.id, caught[0]);
        }
    }
    Ok(tally)
}
