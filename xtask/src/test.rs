//! `cargo xtask test`: everything CI checks, in one command. Formatting, clippy, the unit
//! tests, every chapter's checks as root, the exercise guarantee (each exercise stripped on
//! its own is caught by one of its checks), and the book.

use anyhow::{bail, Result};

use crate::book;
use xtask::process::run;

use crate::cargo::Binaries;
use crate::cargo::{build_chapter, cargo};
use crate::chapters::{self, Chapter};
use crate::check::{report, run_checks, Outcome, Place, Tally};
use crate::exercises::{self, RestoreOnDrop};
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
    xtask::rootfs::ensure_default_rootfs()?;
    let all = chapters::all()?;
    let mut tally = Tally::default();
    for chapter in &all {
        println!("\n== chapter {}: every exercise is caught by a check", chapter.number);
        tally.add(&exercise_guarantee(chapter, &all)?);
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

/// For each exercise of `chapter`: strip it alone, build, and expect at least one of its
/// checks to fail, on the host or else in the chapter's guests (a v2-only exercise is
/// caught only in a v2 guest when the host is v1). The sources are restored afterwards,
/// also when a step fails.
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
        let binaries = match build_chapter(chapter, all) {
            Ok(binaries) => binaries,
            Err(err) => {
                tally.failed += 1;
                println!(
                    "FAIL exercise {}: the chapter does not build with it stripped: {err:#}",
                    exercise.id
                );
                continue;
            }
        };
        match first_failing_check(chapter, &binaries, &exercise.checks)? {
            Some(check) => {
                tally.passed += 1;
                println!("PASS exercise {} is caught by {check}", exercise.id);
            }
            None => {
                tally.failed += 1;
                println!("FAIL exercise {}: stripped, and none of its checks failed", exercise.id);
            }
        }
    }
    Ok(tally)
}

/// The first of `checks` that fails, on the host or else in the chapter's guests.
fn first_failing_check(
    chapter: &Chapter,
    binaries: &Binaries,
    checks: &[String],
) -> Result<Option<String>> {
    for place in Place::all_for(chapter) {
        let outcomes = run_checks(chapter, binaries, checks, place)?;
        let failed = outcomes.iter().find(|(_, outcome)| matches!(outcome, Outcome::Fail { .. }));
        if let Some((name, _)) = failed {
            return Ok(Some(format!("{name}{}", place.label())));
        }
    }
    Ok(None)
}
