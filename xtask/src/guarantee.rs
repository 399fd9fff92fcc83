//! The exercise guarantee, which makes the checks honest. For every exercise of a chapter:
//!
//! - stripped alone (every other region at its reference solution), one of its checks fails;
//! - each of its listed mistakes alone, one of its checks fails, unless exercises.toml says
//!   the mistake cannot be caught on this machine (then it is reported as known);
//! - one exercise at a time: with the exercises before it and itself done and every later one
//!   stripped, each of its checks passes, or stops at the `todo!()` of a later exercise and
//!   at nothing else. A start runs every step of the chapter's sequence in turn, so a check
//!   of an early step cannot pass while a later step is still a `todo!()`; what it must not
//!   do is fail on an assertion of its own, or stop at an earlier exercise. check-chapter's
//!   FAIL line then names the later exercise, the one to do next.
//!
//! "Fails" means on the host, or else in the chapter's guests (a v2-only mistake is caught
//! only in a v2 guest when the host is v1); "pass" means that no check fails anywhere and
//! each passes somewhere (a check the host skips, lacking what it needs, passes in a guest).
//!
//! Each trial is one variant of the sources, built once: only the chapter it changes is
//! rebuilt (with the earlier chapters it depends on, which cargo finds fresh; later chapters
//! are not built), and only the checks its expectations name run (a guest only while the
//! host has not decided). Trials that are the same variant (the last exercise stripped alone
//! is also the one-at-a-time variant of the one before it) are built once. Mistakes of
//! different exercises share a build when that is sound: their checks are disjoint, and the
//! stripped variants showed that neither exercise's checks run the other's region (they
//! passed with it stripped and reached no `todo!()` of it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Result;

use crate::cargo::build_chapter;
use crate::chapters::{self, Chapter};
use crate::check::{reached_todos, run_checks, run_variant_checks, Outcome, Place, Tally};
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
    let mut tally = Tally::default();
    for chapter in chosen {
        chapter.ensure_check_files()?;
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
    let mut tally = Tally::default();
    let mut independent = Independence::default();
    let mut builds = 0;
    let mut expectations = 0;
    // The stripped variants first, the one-at-a-time ones leading: what they show about
    // which checks run which regions decides which mistakes may share a build.
    let stripped = stripped_trials(&exercises);
    for trial in &stripped {
        tally.add(&run_trial(chapter, all, trial, &exercises, &mut independent)?);
    }
    let mistaken = mistake_trials(&exercises, &independent);
    for trial in &mistaken {
        tally.add(&run_trial(chapter, all, trial, &exercises, &mut independent)?);
    }
    for trial in stripped.iter().chain(&mistaken) {
        builds += 1;
        expectations += trial.expectations.len();
    }
    println!(
        "chapter {}: {expectations} expectations in {builds} builds, {:.0} s",
        chapter.number,
        started.elapsed().as_secs_f64()
    );
    Ok(tally)
}

/// Which exercises' checks were seen not to run which other exercises' regions: (X, Y) when,
/// with Y stripped and X done, X's checks all passed on the host and none reached Y's
/// `todo!()`. Those checks never run Y's code, so no mistake there can change what they
/// say.
#[derive(Debug, Default)]
struct Independence {
    pairs: BTreeSet<(String, String)>,
}

impl Independence {
    /// Records what the host's `outcomes` and `outputs` show, for a variant that strips the
    /// exercises `stripped` and leaves the others done.
    fn learn(
        &mut self,
        exercises: &[Exercise],
        stripped: &[&str],
        outcomes: &BTreeMap<String, Outcome>,
        outputs: &BTreeMap<String, String>,
    ) {
        for exercise in exercises.iter().filter(|e| !stripped.contains(&e.id.as_str())) {
            let untouched = exercise.checks.iter().all(|check| {
                outcomes.get(check) == Some(&Outcome::Pass)
                    && outputs.get(check).is_some_and(|output| {
                        reached_todos(output).iter().all(|id| !stripped.contains(&id.as_str()))
                    })
            });
            if untouched {
                for id in stripped {
                    self.pairs.insert((exercise.id.clone(), id.to_string()));
                }
            }
        }
    }

    /// Whether neither exercise's checks run the other's region.
    fn both_ways(&self, x: &str, y: &str) -> bool {
        let pair = |a: &str, b: &str| self.pairs.contains(&(a.to_string(), b.to_string()));
        pair(x, y) && pair(y, x)
    }
}

/// Each exercise stripped alone, and the one-at-a-time variants (every exercise after K
/// stripped), the same variants merged into one trial.
fn stripped_trials(exercises: &[Exercise]) -> Vec<Trial<'_>> {
    let mut trials: Vec<Trial> = Vec::new();
    let mut add = |stripped: &[Exercise], expectation| {
        let ids: Vec<&str> = stripped.iter().map(|e| e.id.as_str()).collect();
        match trials.iter_mut().find(|trial| trial.stripped().as_deref() == Some(&ids[..])) {
            Some(trial) => trial.expectations.push(expectation),
            None => {
                let bodies = stripped.iter().map(|e| (e.id.clone(), Body::Stripped)).collect();
                trials.push(Trial { bodies, expectations: vec![expectation] })
            }
        }
    };
    // The last exercise's one-at-a-time variant is the solution: the chapter's checks.
    for (k, exercise) in exercises.iter().enumerate() {
        let later = &exercises[k + 1..];
        if !later.is_empty() {
            let ids: Vec<&str> = later.iter().map(|later| later.id.as_str()).collect();
            let what = format!(
                "exercise {}'s checks pass with {} still stripped",
                exercise.id,
                ids.join(", ")
            );
            add(later, Expectation { what, exercise, expect: Expect::Pass });
        }
    }
    for exercise in exercises {
        let what = format!("exercise {} stripped", exercise.id);
        let expect = Expect::Caught { uncatchable: None };
        add(std::slice::from_ref(exercise), Expectation { what, exercise, expect });
    }
    trials
}

/// Each listed mistake alone, packed into shared builds where that is sound: mistakes of
/// different exercises whose checks are disjoint and neither of which runs the other's
/// region (see [`Independence`]).
fn mistake_trials<'a>(exercises: &'a [Exercise], independent: &Independence) -> Vec<Trial<'a>> {
    let mut trials: Vec<Trial> = Vec::new();
    for exercise in exercises {
        for mistake in &exercise.mistakes {
            let what = format!("exercise {} mistake \"{}\"", exercise.id, mistake.what);
            let expect = Expect::Caught { uncatchable: mistake.uncatchable.as_deref() };
            let expectation = Expectation { what, exercise, expect };
            let shares = |trial: &&mut Trial| {
                trial.expectations.iter().all(|other| {
                    let (x, y) = (&exercise.id, &other.exercise.id);
                    x != y
                        && independent.both_ways(x, y)
                        && exercise.checks.iter().all(|c| !other.exercise.checks.contains(c))
                })
            };
            match trials.iter_mut().find(shares) {
                Some(trial) => {
                    trial.bodies.insert(exercise.id.clone(), Body::Mistaken(mistake));
                    trial.expectations.push(expectation);
                }
                None => trials.push(Trial {
                    bodies: BTreeMap::from([(exercise.id.clone(), Body::Mistaken(mistake))]),
                    expectations: vec![expectation],
                }),
            }
        }
    }
    trials
}

impl Trial<'_> {
    /// The ids of the exercises it strips, when it strips and changes nothing else.
    fn stripped(&self) -> Option<Vec<&str>> {
        let all_stripped = self.bodies.values().all(|body| matches!(body, Body::Stripped));
        all_stripped.then(|| self.bodies.keys().map(String::as_str).collect())
    }
}

/// Writes the trial's variant, builds it, runs the checks its expectations name, and puts
/// the sources back (also when a step fails). What a stripping variant's host run shows
/// about which checks do not run the stripped regions is learnt; a variant that strips one
/// exercise X with mistakes also runs the checks of each later exercise Y with mistakes
/// whose region X's checks were seen not to run, to learn whether that holds both ways.
fn run_trial(
    chapter: &Chapter,
    all: &[Chapter],
    trial: &Trial,
    exercises: &[Exercise],
    independent: &mut Independence,
) -> Result<Tally> {
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
    let stripped = trial.stripped();
    let mut named: Vec<&Exercise> = trial.expectations.iter().map(|e| e.exercise).collect();
    if let Some([x]) = stripped.as_deref() {
        let x = exercises.iter().find(|e| e.id == *x).expect("a trial strips an exercise");
        let worth_learning = |y: &&Exercise| {
            !x.mistakes.is_empty()
                && !y.mistakes.is_empty()
                && independent.pairs.contains(&(x.id.clone(), y.id.clone()))
        };
        named.extend(exercises.iter().filter(worth_learning));
    }
    let mut checks: Vec<String> = named.iter().flat_map(|e| e.checks.iter().cloned()).collect();
    checks.sort();
    checks.dedup();
    // Places are tried in turn, and a guest runs only while some expectation is undecided:
    // a mistake caught on the host needs no guest, nor do checks that failed where they
    // were expected to pass.
    let mut outcomes_at: Vec<(Place, BTreeMap<String, Outcome>)> = Vec::new();
    let mut host_outputs = BTreeMap::new();
    for place in Place::all_for(chapter) {
        if place == Place::Host {
            let (outcomes, outputs) = run_variant_checks(chapter, &binaries, &checks, place)?;
            if let Some(stripped) = &stripped {
                independent.learn(exercises, stripped, &outcomes, &outputs);
            }
            outcomes_at.push((place, outcomes));
            host_outputs = outputs;
            continue;
        }
        let undecided =
            trial.expectations.iter().any(|e| first_failure(e.exercise, &outcomes_at).is_none());
        if undecided {
            let only: Vec<String> =
                trial.expectations.iter().flat_map(|e| e.exercise.checks.iter().cloned()).collect();
            outcomes_at.push((place, run_checks(chapter, &binaries, &only, place)?));
        }
    }
    for expectation in &trial.expectations {
        let blocked_by =
            |check: &str| later_todo_reached(expectation.exercise, exercises, &host_outputs, check);
        judge(expectation, &outcomes_at, &blocked_by, &mut tally);
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

/// The later exercise whose `todo!()` stopped `check` on the host, when only todos of
/// exercises after `exercise` were reached.
fn later_todo_reached(
    exercise: &Exercise,
    exercises: &[Exercise],
    host_outputs: &BTreeMap<String, String>,
    check: &str,
) -> Option<String> {
    let position = |id: &str| exercises.iter().position(|e| e.id == id);
    let own = position(&exercise.id)?;
    let reached = reached_todos(host_outputs.get(check)?);
    let all_later = reached.iter().all(|id| position(id).is_some_and(|at| at > own));
    all_later.then(|| reached.first().cloned()).flatten()
}

/// Prints the expectation's PASS or FAIL line and counts it. `blocked_by` names the later
/// exercise whose `todo!()` alone stopped a check on the host.
fn judge(
    expectation: &Expectation,
    outcomes_at: &[(Place, BTreeMap<String, Outcome>)],
    blocked_by: &dyn Fn(&str) -> Option<String>,
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
            let mut blocked = Vec::new();
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
                        match (*place == Place::Host).then(|| blocked_by(check)).flatten() {
                            Some(later) => {
                                blocked.push(format!("{check} stops at exercise {later}"));
                                None
                            }
                            None => Some(format!("{check}{} failed", place.label())),
                        }
                    } else if at(|outcome| *outcome == Outcome::Pass).is_none() {
                        Some(format!("{check} passed nowhere"))
                    } else {
                        None
                    }
                })
                .collect();
            if not_passed.is_empty() && blocked.is_empty() {
                tally.passed += 1;
                println!("PASS {what}");
            } else if not_passed.is_empty() {
                tally.passed += 1;
                println!("PASS {what}, or stop at a later todo!(): {}", blocked.join("; "));
            } else {
                tally.failed += 1;
                println!("FAIL {what}: {}", not_passed.join("; "));
            }
        }
    }
}
