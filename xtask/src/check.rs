//! `cargo xtask check-chapter N`: build chapter N, run its checks as root, and say for each
//! one whether it passed, or which exercise to look at when it failed.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;

use anyhow::{Context, Result};
use xtask::project_root;

use crate::cargo::{as_root, build_chapter, test_executable};
use crate::chapters::{self, Chapter};
use crate::exercises::{self, Exercise};

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
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    pub fn summary(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }
}

/// `cargo xtask check-chapter N`.
pub fn check_chapter(number: u32) -> Result<()> {
    let all = chapters::all()?;
    let chapter = chapters::find(&all, number)?;
    xtask::rootfs::ensure_default_rootfs()?;
    build_chapter(chapter, &all)?;
    let tally = report(chapter, &run_checks(chapter, &[])?)?;
    println!("{}", tally.summary());
    if tally.failed > 0 {
        anyhow::bail!("chapter {number}: {} check(s) failed", tally.failed);
    }
    Ok(())
}

/// Runs the checks of `chapter` (only those named in `only`, when given) and returns each
/// one's outcome by name. The chapter must be built.
pub fn run_checks(chapter: &Chapter, only: &[String]) -> Result<BTreeMap<String, Outcome>> {
    let executable = test_executable(&chapter.test_name)?;
    let skips = tempfile_path(&chapter.test_name);
    let mut checks = as_root(&executable);
    checks
        .args(["--exact", "--color", "never"])
        .args(only)
        .env("CRABBOX_SKIP_LOG", &skips)
        .current_dir(project_root())
        .stderr(Stdio::inherit());
    let output = checks.output().with_context(|| format!("run {}", executable.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let skipped = read_skips(&skips);
    let _ = fs::remove_file(&skips);
    Ok(parse_libtest(&stdout, &skipped))
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("crabbox-skips-{name}-{}", std::process::id()))
}

/// A check that lacks a prerequisite writes `name\twhy` to $CRABBOX_SKIP_LOG and returns.
fn read_skips(path: &std::path::Path) -> BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, why)| (name.to_string(), why.to_string()))
        .collect()
}

/// Reads libtest's `test NAME ... ok|FAILED` lines and the `---- NAME stdout ----` sections
/// that hold each failure's output.
fn parse_libtest(stdout: &str, skipped: &BTreeMap<String, String>) -> BTreeMap<String, Outcome> {
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test ") else { continue };
        let Some((name, result)) = rest.rsplit_once(" ... ") else { continue };
        let outcome = match (result, skipped.get(name)) {
            ("ok", Some(why)) => Outcome::Skip { why: why.clone() },
            ("ok", None) => Outcome::Pass,
            ("FAILED", _) => Outcome::Fail { output: failure_output(stdout, name) },
            _ => continue,
        };
        outcomes.insert(name.to_string(), outcome);
    }
    outcomes
}

fn failure_output(stdout: &str, name: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let Some(start) = stdout.find(&header) else { return String::new() };
    let section = &stdout[start + header.len()..];
    let end = ["\n---- ", "\nfailures:"].iter().filter_map(|m| section.find(m)).min();
    section[..end.unwrap_or(section.len())].trim().to_string()
}

/// Prints one line per check and returns the tally.
pub fn report(chapter: &Chapter, outcomes: &BTreeMap<String, Outcome>) -> Result<Tally> {
    let exercises = exercises::load(chapter)?;
    let mut tally = Tally::default();
    for (name, outcome) in outcomes {
        match outcome {
            Outcome::Pass => {
                tally.passed += 1;
                println!("PASS {name}");
            }
            Outcome::Skip { why } => {
                tally.skipped += 1;
                println!("SKIP {name}: {why}");
            }
            Outcome::Fail { output } => {
                tally.failed += 1;
                print_failure(name, output, &exercises);
            }
        }
    }
    Ok(tally)
}

fn print_failure(name: &str, output: &str, exercises: &[Exercise]) {
    let owners: Vec<&Exercise> =
        exercises.iter().filter(|exercise| exercise.checks.iter().any(|c| c == name)).collect();
    let ids: Vec<&str> = owners.iter().map(|exercise| exercise.id.as_str()).collect();
    if ids.is_empty() {
        println!("FAIL {name}");
    } else {
        println!("FAIL {name} (exercise {})", ids.join(", "));
    }
    for exercise in owners {
        println!("     exercise {}: {}", exercise.id, exercise.title);
        for line in exercise.hint.trim().lines() {
            println!("     hint: {line}");
        }
    }
    for line in output.lines().filter(|line| !line.trim().is_empty()).take(12) {
        println!("     | {line}");
    }
}
