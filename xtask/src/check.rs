//! `cargo xtask check-chapter N`: build chapter N, run its checks as root, and say for each
//! one whether it passed, or which exercise to look at when it failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use clap::ValueEnum;
use xtask::project_root;

use xtask::process::as_root;

use crate::cargo::{build_chapter, test_executable, Binaries};
use crate::chapters::{self, Chapter};
use crate::exercises::{self, Exercise};
use crate::vm::{run_in_guest, CgroupLayout};

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Pass,
    Fail { output: String },
    Skip { why: String },
}

#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The exercises that the failures were put down to.
    pub stopped_by: BTreeSet<String>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.stopped_by.extend(other.stopped_by.iter().cloned());
    }

    pub fn summary(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }
}

/// Where checks run: on this machine, or in a throwaway guest with a given cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Host,
    Guest(CgroupLayout),
}

impl Place {
    /// The host, then the guests the chapter asks for.
    pub fn all_for(chapter: &Chapter) -> Vec<Place> {
        let guests = chapter.guest_checks.iter().map(|layout| Place::Guest(*layout));
        std::iter::once(Place::Host).chain(guests).collect()
    }

    pub fn label(self) -> String {
        match self {
            Place::Host => String::new(),
            Place::Guest(layout) => format!(" [{} guest]", layout_name(layout)),
        }
    }
}

fn layout_name(layout: CgroupLayout) -> String {
    layout.to_possible_value().map(|value| value.get_name().to_string()).unwrap_or_default()
}

/// `cargo xtask check-chapter N [--exercise K] [--guests]`.
pub fn check_chapter(number: u32, exercise: Option<u32>, guests: bool) -> Result<()> {
    let all = chapters::all()?;
    let chapter = chapters::find(&all, number)?;
    let exercises = exercises::load(chapter)?;
    let only = match exercise {
        Some(k) => find_exercise(&exercises, &format!("{number}.{k}"))?.checks.clone(),
        None => Vec::new(),
    };
    chapter.ensure_check_files()?;
    let binaries = build_chapter(chapter, &all)?;
    let places = if guests { Place::all_for(chapter) } else { vec![Place::Host] };
    let mut tally = Tally::default();
    for place in places {
        let outcomes = run_checks(chapter, &binaries, &only, place)?;
        tally.add(&report(chapter, &outcomes, place)?);
    }
    println!("{}", tally.summary());
    println!("{}", next_step(chapter, &exercises, &tally, exercise));
    if tally.failed > 0 {
        anyhow::bail!("chapter {number}: {} check(s) failed", tally.failed);
    }
    Ok(())
}

/// The exercise `id` (`3.1`), or an error that lists the chapter's exercises.
pub fn find_exercise<'a>(exercises: &'a [Exercise], id: &str) -> Result<&'a Exercise> {
    exercises.iter().find(|exercise| exercise.id == id).with_context(|| {
        let ids: Vec<&str> = exercises.iter().map(|exercise| exercise.id.as_str()).collect();
        format!("there is no exercise {id}; the exercises are {}", ids.join(", "))
    })
}

/// What the learner does next: the first exercise a failure named, or the next exercise or
/// chapter once everything asked for passed.
fn next_step(
    chapter: &Chapter,
    exercises: &[Exercise],
    tally: &Tally,
    exercise: Option<u32>,
) -> String {
    let n = chapter.number;
    if let Some(id) = tally.stopped_by.iter().min_by_key(|id| exercise_order(id)) {
        let title = exercises.iter().find(|e| &e.id == id).map_or("", |e| e.title.as_str());
        let k = id.split_once('.').map_or(id.as_str(), |(_, k)| k);
        return format!(
            "next: exercise {id}, {title} (`cargo xtask check-chapter {n} --exercise {k}`; \
             `cargo xtask hint {id}` for a fuller hint)"
        );
    }
    if tally.failed > 0 {
        return "next: the failures above come from no exercise; see their output".into();
    }
    let done = exercise.map(|k| format!("{n}.{k}"));
    let later = done
        .as_deref()
        .and_then(|done| exercises.iter().find(|e| exercise_order(&e.id) > exercise_order(done)));
    match (done, later) {
        (Some(done), Some(later)) => format!(
            "exercise {done} is done; next: exercise {}, {} (`cargo xtask check-chapter {n} \
             --exercise {}`)",
            later.id,
            later.title,
            later.id.split_once('.').map_or("", |(_, k)| k)
        ),
        (Some(done), None) => format!(
            "exercise {done} is done, the last of chapter {n}; run `cargo xtask check-chapter {n}`"
        ),
        (None, _) => format!(
            "chapter {n} is done; next: chapter {} (`cargo xtask exercise {}`)",
            n + 1,
            n + 1
        ),
    }
}

/// `3.10` after `3.9`: exercise ids in order.
pub fn exercise_order(id: &str) -> Vec<u32> {
    id.split('.').map(|n| n.parse().unwrap_or(u32::MAX)).collect()
}

/// `cargo xtask hint N.K`: the exercise's second, fuller hint.
pub fn hint(id: &str) -> Result<()> {
    let number: u32 = id
        .split_once('.')
        .and_then(|(n, _)| n.parse().ok())
        .with_context(|| format!("`{id}` is not an exercise id such as 3.1"))?;
    let all = chapters::all()?;
    let exercises = exercises::load(chapters::find(&all, number)?)?;
    let exercise = find_exercise(&exercises, id)?;
    println!("exercise {}: {}", exercise.id, exercise.title);
    print_hints(exercise, true);
    Ok(())
}

fn print_hints(exercise: &Exercise, fuller: bool) {
    for line in exercise.hint.trim().lines() {
        println!("     hint: {line}");
    }
    match (&exercise.hint2, fuller) {
        (Some(hint2), true) => {
            for line in hint2.trim().lines() {
                println!("     more: {line}");
            }
        }
        (None, true) => println!("     (exercise {} has no second hint)", exercise.id),
        (_, false) => {}
    }
}

/// Runs the checks of `chapter` (only those named in `only`, when given) at `place` and
/// returns each one's outcome by name. `binaries` are the chapter's, built.
pub fn run_checks(
    chapter: &Chapter,
    binaries: &Binaries,
    only: &[String],
    place: Place,
) -> Result<BTreeMap<String, Outcome>> {
    Ok(parse_libtest(&run_libtest(chapter, binaries, only, place, Purpose::Learner)?))
}

/// [`run_checks`] for the guarantee, on variants of the sources that are meant to fail:
/// also what each check printed (passed ones too), where the guarantee reads which
/// exercises' `todo!()`s a check reached; and no snapshot is written.
pub fn run_variant_checks(
    chapter: &Chapter,
    binaries: &Binaries,
    only: &[String],
    place: Place,
) -> Result<(BTreeMap<String, Outcome>, BTreeMap<String, String>)> {
    let stdout = run_libtest(chapter, binaries, only, place, Purpose::Guarantee)?;
    let outcomes = parse_libtest(&stdout);
    let outputs = outcomes.keys().map(|name| (name.clone(), check_output(&stdout, name))).collect();
    Ok((outcomes, outputs))
}

/// Who the checks run for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Purpose {
    /// A snapshot that differs is written beside the old one (`.snap.new`), for review.
    Learner,
    /// The guarantee: the output of passed checks too, and no snapshot written.
    Guarantee,
}

/// libtest's standard output for the checks `only` (every check when empty) at `place`.
fn run_libtest(
    chapter: &Chapter,
    binaries: &Binaries,
    only: &[String],
    place: Place,
    purpose: Purpose,
) -> Result<String> {
    let executable = test_executable(&chapter.test_name)?;
    let mut args: Vec<String> = ["--exact", "--color", "never"].map(String::from).to_vec();
    if purpose == Purpose::Guarantee {
        args.push("--show-output".into());
    }
    args.extend(only.iter().cloned());
    let mut env = binaries.env();
    // Snapshots cannot be written from the guest either (its view of the tree is a
    // throwaway overlay); a mismatch fails the check and shows the difference.
    if purpose == Purpose::Guarantee || place != Place::Host {
        env.push(("INSTA_UPDATE".to_string(), "no".to_string()));
    }
    Ok(match place {
        Place::Host => run_on_host(&executable, &args, &env)?,
        Place::Guest(layout) => {
            run_in_guest(layout, &executable, &args, &env, &project_root())?.stdout
        }
    })
}

fn run_on_host(executable: &Path, args: &[String], env: &[(String, String)]) -> Result<String> {
    let mut checks = as_root(executable);
    checks
        .args(args)
        .envs(env.iter().cloned())
        .current_dir(project_root())
        .stderr(Stdio::inherit());
    let output = checks.output().with_context(|| format!("run {}", executable.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // A run that ends without libtest's summary (sudo refused, a crash) checked nothing.
    if !stdout.lines().any(|line| line.starts_with("test result:")) {
        anyhow::bail!("{} ran no checks ({})", executable.display(), output.status);
    }
    Ok(stdout)
}

/// Reads libtest's `test NAME ... ok|FAILED|ignored, REASON` lines and the
/// `---- NAME stdout ----` sections that hold each failure's output. A check that needs
/// what a machine may lack is `#[ignore = "REASON"]`d there and shows as SKIP.
fn parse_libtest(stdout: &str) -> BTreeMap<String, Outcome> {
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test ") else { continue };
        let Some((name, result)) = rest.rsplit_once(" ... ") else { continue };
        let outcome = match result {
            "ok" => Outcome::Pass,
            "FAILED" => Outcome::Fail { output: check_output(stdout, name) },
            ignored if ignored.starts_with("ignored") => Outcome::Skip {
                why: ignored.split_once(", ").map_or("ignored", |(_, why)| why).to_string(),
            },
            _ => continue,
        };
        outcomes.insert(name.to_string(), outcome);
    }
    outcomes
}

/// What check `name` printed: its `---- NAME stdout ----` section (a failure's, or with
/// `--show-output` a pass's too).
fn check_output(stdout: &str, name: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let Some(start) = stdout.find(&header) else { return String::new() };
    let section = &stdout[start + header.len()..];
    let end =
        ["\n---- ", "\nfailures:", "\nsuccesses:"].iter().filter_map(|m| section.find(m)).min();
    section[..end.unwrap_or(section.len())].trim().to_string()
}

/// Prints one line per check and returns the tally.
pub fn report(
    chapter: &Chapter,
    outcomes: &BTreeMap<String, Outcome>,
    place: Place,
) -> Result<Tally> {
    let at = place.label();
    let exercises = exercises::load(chapter)?;
    let mut tally = Tally::default();
    for (name, outcome) in outcomes {
        let failures_in_a_row = count_failures(chapter, name, place, outcome);
        match outcome {
            Outcome::Pass => {
                tally.passed += 1;
                println!("PASS {name}{at}");
            }
            Outcome::Skip { why } => {
                tally.skipped += 1;
                println!("SKIP {name}{at}: {why}");
            }
            Outcome::Fail { output } => {
                tally.failed += 1;
                let blame = blame(name, output, &exercises);
                println!("FAIL {name}{at} ({})", blame.describe(name));
                if let Some(exercise) = blame.exercise() {
                    tally.stopped_by.insert(exercise.id.clone());
                    println!("     exercise {}: {}", exercise.id, exercise.title);
                    print_hints(exercise, failures_in_a_row >= FAILURES_BEFORE_HINT2);
                }
                for line in output.lines().filter(|line| shown(line)).take(12) {
                    println!("     | {line}");
                }
            }
        }
    }
    Ok(tally)
}

/// Whether a line of a failure's output is worth showing: not empty, and not a stack frame
/// of a backtrace (the panic message above it says what happened).
fn shown(line: &str) -> bool {
    let trimmed = line.trim_start();
    let frame = trimmed.starts_with("at ")
        || trimmed.split_once(": ").is_some_and(|(n, rest)| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && rest.contains("::")
        })
        || trimmed.starts_with("stack backtrace:")
        || trimmed.starts_with("note: Some details are omitted");
    !trimmed.is_empty() && !frame
}

/// Who a failure is put down to.
#[derive(Debug)]
enum Blame<'a> {
    /// The check reached this exercise's `todo!()`.
    Reached(&'a Exercise),
    /// The check belongs to this exercise (the first one that lists it).
    Owner(&'a Exercise),
    /// No exercise lists the check and it reached no `todo!()`.
    Nobody,
}

impl Blame<'_> {
    fn exercise(&self) -> Option<&Exercise> {
        match self {
            Blame::Reached(exercise) | Blame::Owner(exercise) => Some(exercise),
            Blame::Nobody => None,
        }
    }

    fn describe(&self, check: &str) -> String {
        match self {
            Blame::Reached(exercise) if exercise.checks.iter().any(|c| c == check) => {
                format!("exercise {}", exercise.id)
            }
            Blame::Reached(exercise) => {
                format!("exercise {}: the check reached its todo!()", exercise.id)
            }
            Blame::Owner(exercise) => format!("exercise {}", exercise.id),
            Blame::Nobody => "not an exercise's check: the chapter's code or this machine".into(),
        }
    }
}

/// The exercise that stopped the check `name`: the one whose `todo!("exercise N.K")` its
/// output shows was reached (the earliest, when several were), else the one that lists it.
fn blame<'a>(name: &str, output: &str, exercises: &'a [Exercise]) -> Blame<'a> {
    let reached = reached_todos(output)
        .into_iter()
        .filter_map(|id| exercises.iter().find(|exercise| exercise.id == id))
        .min_by_key(|exercise| exercise_order(&exercise.id));
    if let Some(exercise) = reached {
        return Blame::Reached(exercise);
    }
    match exercises.iter().find(|exercise| exercise.checks.iter().any(|c| c == name)) {
        Some(exercise) => Blame::Owner(exercise),
        None => Blame::Nobody,
    }
}

/// The exercise ids of every `todo!("exercise N.K")` panic in `output`: Rust prints them as
/// `not yet implemented: exercise N.K`.
pub fn reached_todos(output: &str) -> Vec<String> {
    const PANIC: &str = "not yet implemented: exercise ";
    output
        .split(PANIC)
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect())
        .map(|id: String| id.trim_end_matches('.').to_string())
        .filter(|id| !id.is_empty())
        .collect()
}

/// After this many failures in a row of one check, its exercise's second hint is shown too.
const FAILURES_BEFORE_HINT2: u32 = 3;

/// Counts the failures in a row of check `name` (a pass starts again from 0), in the
/// gitignored .crabbox/failures/, and returns the count including this outcome.
fn count_failures(chapter: &Chapter, name: &str, place: Place, outcome: &Outcome) -> u32 {
    let dir = project_root().join(".crabbox/failures").join(format!("{:02}", chapter.number));
    let file = dir.join(format!("{name}{}", place.label().replace([' ', '[', ']'], "")));
    let count = match outcome {
        Outcome::Fail { .. } => {
            fs::read_to_string(&file).ok().and_then(|n| n.trim().parse().ok()).unwrap_or(0) + 1
        }
        Outcome::Pass => 0,
        Outcome::Skip { .. } => return 0,
    };
    // A counter that cannot be kept costs only the second hint.
    let _ = fs::create_dir_all(&dir).and_then(|()| fs::write(&file, count.to_string()));
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_become_outcomes() {
        let stdout = "running 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ignored, needs swap\n\nfailures:\n\n---- b stdout ----\nthread 'b' panicked: boom\n\nfailures:\n    b\n";
        let outcomes = parse_libtest(stdout);
        assert_eq!(outcomes["a"], Outcome::Pass);
        assert_eq!(outcomes["b"], Outcome::Fail { output: "thread 'b' panicked: boom".into() });
        assert_eq!(outcomes["c"], Outcome::Skip { why: "needs swap".into() });
    }

    fn exercise(id: &str, checks: &[&str]) -> Exercise {
        let checks: Vec<String> = checks.iter().map(|c| format!("\"{c}\"")).collect();
        let toml =
            format!("id = \"{id}\"\ntitle = \"t\"\nhint = \"h\"\nchecks = [{}]", checks.join(","));
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn a_failure_is_put_down_to_the_todo_it_reached() {
        let exercises = [exercise("3.1", &["a"]), exercise("3.5", &["b"])];
        let output =
            "thread 'main' panicked at src/mounts.rs:9:5:\nnot yet implemented: exercise 3.5\n";
        let blamed = |check, output| blame(check, output, &exercises).describe(check);
        assert_eq!(blamed("b", output), "exercise 3.5");
        assert_eq!(blamed("a", "assertion failed"), "exercise 3.1");
        assert!(blamed("c", "assertion failed").starts_with("not an exercise's check"));
        assert_eq!(reached_todos("not yet implemented: exercise 3.12."), ["3.12"]);
        let described = blame("a", output, &exercises).describe("a");
        assert_eq!(described, "exercise 3.5: the check reached its todo!()");
    }
}
