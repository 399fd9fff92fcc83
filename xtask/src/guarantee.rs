//! The exercise guarantee, which makes the checks honest. For every exercise of a chapter:
//!
//! - stripped alone (every other region at its reference solution), one of its checks fails;
//! - each of its listed mistakes alone, one of its checks fails, unless exercises.toml says
//!   the mistake cannot be caught on this machine (then it is reported as known);
//! - one exercise at a time: with the exercises before it and itself done and every later one
//!   stripped, its checks pass.
//!
//! "Fails" means on the host, or else in the chapter's guests (a v2-only mistake is caught
//! only in a v2 guest when the host is v1); "pass" means on the host and in every guest.
//!
//! Each trial is one variant of the sources, built once: only the chapter it changes is
//! rebuilt (with what it depends on; later chapters are not built), and only the checks its
//! expectations name run. Trials that are the same variant (the last exercise stripped alone
//! is also the one-at-a-time variant of the one before it) are built once.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;

use crate::cargo::build_chapter;
use crate::chapters::{self, Chapter};
use crate::check::{run_checks, Outcome, Place, Tally};
use crate::exercises::{self, Body, Exercise, Variant};

/// What a trial expects of an exercise's checks.
#[derive(Debug)]
enum Expect<'a> {
    /// At least one fails; `uncatchable` says why none can, when that is known.
    Caught { uncatchable: Option<&'a str> },
    /// All pass.
    Pass,
}

#[derive(Debug)]
struct Expectation<'a> {
    /// What is being proved, for the report line: `exercise 3.1 stripped`.
    what: String,
    exercise: &'a Exercise,
    expect: Expect<'a>,
}

/// One variant of the chapter's sources and what the guarantee expects of it.
#[derive(Debug)]
struct Trial<'a> {
    bodies: BTreeMap<String, Body<'a>>,
    expectations: Vec<Expectation<'a>>,
}

/// `cargo xtask guarantee [N]`: the guarantee of chapter N, or of every chapter.
pub fn run(number: Option<u32>) -> Result<()> {
    let all = chapters::all()?;
    let chosen: Vec<&Chapter> = match number {
        Some(number) => vec![chapters::find(&all, number)?],
        None => all.iter().collect(),
    };
    xtask::rootfs::ensure_default_rootfs()?;
    let mut tally = Tally::default();
    for chapter in chosen {
        println!("\n== chapter {}: the exercise guarantee", chapter.number);
        tally.add(&guarantee(chapter, &all)?);
    }
    println!("\n{}", tally.summary());
    anyhow::ensure!(tally.failed == 0, "the guarantee does not hold");
    Ok(())
}

/// Runs the guarantee for `chapter` and prints one PASS or FAIL line per expectation.
pub fn guarantee(chapter: &Chapter, all: &[Chapter]) -> Result<Tally> {
    let exercises = exercises::load(chapter)?;
    let started = Instant::now();
    let trials = trials(&exercises);
    let mut tally = Tally::default();
    for trial in &trials {
        tally.add(&run_trial(chapter, all, trial)?);
    }
    let expectations: usize = trials.iter().map(|trial| trial.expectations.len()).sum();
    println!(
        "chapter {}: {expectations} expectations in {} builds, {:.0} s",
        chapter.number,
        trials.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(tally)
}

/// Every trial of the guarantee, the same variants merged into one.
fn trials<'a>(exercises: &'a [Exercise]) -> Vec<Trial<'a>> {
    let mut trials: Vec<(String, Trial<'a>)> = Vec::new();
    let mut add = |bodies: BTreeMap<String, Body<'a>>,
                   key: String,
                   expectation: Expectation<'a>| match trials
        .iter_mut()
        .find(|(existing, _)| *existing == key)
    {
        Some((_, trial)) => trial.expectations.push(expectation),
        None => trials.push((key, Trial { bodies, expectations: vec![expectation] })),
    };
    for exercise in exercises {
        let stripped = BTreeMap::from([(exercise.id.clone(), Body::Stripped)]);
        let what = format!("exercise {} stripped", exercise.id);
        let caught = Expect::Caught { uncatchable: None };
        add(
            stripped,
            strip_key(std::iter::once(exercise)),
            Expectation { what, exercise, expect: caught },
        );
        for (index, mistake) in exercise.mistakes.iter().enumerate() {
            let bodies = BTreeMap::from([(exercise.id.clone(), Body::Mistaken(mistake))]);
            let what = format!("exercise {} mistake \"{}\"", exercise.id, mistake.what);
            let expect = Expect::Caught { uncatchable: mistake.uncatchable.as_deref() };
            add(
                bodies,
                format!("{} mistake {index}", exercise.id),
                Expectation { what, exercise, expect },
            );
        }
    }
    // The last exercise's one-at-a-time variant is the solution: the chapter's own checks.
    for (k, exercise) in exercises.iter().enumerate().take(exercises.len().saturating_sub(1)) {
        let later = &exercises[k + 1..];
        let bodies = later.iter().map(|later| (later.id.clone(), Body::Stripped)).collect();
        let what = format!(
            "exercise {}'s checks pass with {} still stripped",
            exercise.id,
            later.iter().map(|later| later.id.as_str()).collect::<Vec<_>>().join(", ")
        );
        add(bodies, strip_key(later.iter()), Expectation { what, exercise, expect: Expect::Pass });
    }
    trials.into_iter().map(|(_, trial)| trial).collect()
}

/// The key of the variant that strips `exercises` and changes nothing else.
fn strip_key<'a>(exercises: impl Iterator<Item = &'a Exercise>) -> String {
    let ids: Vec<&str> = exercises.map(|exercise| exercise.id.as_str()).collect();
    format!("stripped {}", ids.join(" "))
}

/// Writes the trial's variant, builds it, runs the checks its expectations name, and puts
/// the sources back (also when a step fails).
fn run_trial(chapter: &Chapter, all: &[Chapter], trial: &Trial) -> Result<Tally> {
    let mut tally = Tally::default();
    let _variant = Variant::write(chapter, &trial.bodies)?;
    let binaries = match build_chapter(chapter, all) {
        Ok(binaries) => binaries,
        Err(err) => {
            for expectation in &trial.expectations {
                tally.failed += 1;
                println!("FAIL {}: the chapter does not build: {err:#}", expectation.what);
            }
            return Ok(tally);
        }
    };
    let mut checks: Vec<String> =
        trial.expectations.iter().flat_map(|e| e.exercise.checks.iter().cloned()).collect();
    checks.sort();
    checks.dedup();
    // Places are tried in turn, and a place runs only while some expectation is undecided:
    // a failure caught on the host needs no guest.
    let mut outcomes_at: Vec<(Place, BTreeMap<String, Outcome>)> = Vec::new();
    for place in Place::all_for(chapter) {
        let undecided = trial.expectations.iter().any(|expectation| {
            !matches!(expectation.expect, Expect::Caught { .. })
                || first_failure(expectation.exercise, &outcomes_at).is_none()
        });
        if undecided {
            outcomes_at.push((place, run_checks(chapter, &binaries, &checks, place)?));
        }
    }
    for expectation in &trial.expectations {
        judge(expectation, &outcomes_at, &mut tally);
    }
    Ok(tally)
}

/// The first of `exercise`'s checks that failed, and where.
fn first_failure(
    exercise: &Exercise,
    outcomes_at: &[(Place, BTreeMap<String, Outcome>)],
) -> Option<String> {
    outcomes_at.iter().find_map(|(place, outcomes)| {
        exercise.checks.iter().find_map(|check| match outcomes.get(check) {
            Some(Outcome::Fail { .. }) => Some(format!("{check}{}", place.label())),
            _ => None,
        })
    })
}

/// Prints the expectation's PASS or FAIL line and counts it.
fn judge(
    expectation: &Expectation,
    outcomes_at: &[(Place, BTreeMap<String, Outcome>)],
    tally: &mut Tally,
) {
    let what = &expectation.what;
    match expectation.expect {
        Expect::Caught { uncatchable } => {
            match (first_failure(expectation.exercise, outcomes_at), uncatchable) {
                (Some(check), _) => {
                    tally.passed += 1;
                    println!("PASS {what} is caught by {check}");
                }
                (None, Some(why)) => {
                    tally.passed += 1;
                    println!("KNOWN {what} is caught by no check on this machine: {why}");
                }
                (None, None) => {
                    tally.failed += 1;
                    println!("FAIL {what}: none of its checks failed");
                }
            }
        }
        Expect::Pass => {
            // Skipped where the machine lacks what it needs, a check must pass somewhere else.
            let not_passed: Vec<String> = expectation
                .exercise
                .checks
                .iter()
                .filter_map(|check| {
                    let at = |wanted: fn(&Outcome) -> bool| {
                        outcomes_at
                            .iter()
                            .find(|(_, outcomes)| outcomes.get(check).is_some_and(wanted))
                    };
                    if let Some((place, _)) = at(|outcome| matches!(outcome, Outcome::Fail { .. }))
                    {
                        Some(format!("{check}{} failed", place.label()))
                    } else if at(|outcome| *outcome == Outcome::Pass).is_none() {
                        Some(format!("{check} passed nowhere"))
                    } else {
                        None
                    }
                })
                .collect();
            if not_passed.is_empty() {
                tally.passed += 1;
                println!("PASS {what}");
            } else {
                tally.failed += 1;
                println!("FAIL {what}: {}", not_passed.join("; "));
            }
        }
    }
}
