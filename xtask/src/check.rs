//! `cargo xtask check-chapter N`: build chapter N, run its checks as root, and say for each
//! one whether it passed, or which exercise to look at when it failed.

use std::collections::BTreeMap;
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

/// `cargo xtask check-chapter N [--guests]`.
pub fn check_chapter(number: u32, guests: bool) -> Result<()> {
    let all = chapters::all()?;
    let chapter = chapters::find(&all, number)?;
    xtask::rootfs::ensure_default_rootfs()?;
    let binaries = build_chapter(chapter, &all)?;
    let places = if guests { Place::all_for(chapter) } else { vec![Place::Host] };
    let mut tally = Tally::default();
    for place in places {
        tally.add(&report(chapter, &run_checks(chapter, &binaries, &[], place)?, place)?);
    }
    println!("{}", tally.summary());
    if tally.failed > 0 {
        anyhow::bail!("chapter {number}: {} check(s) failed", tally.failed);
    }
    Ok(())
}

/// Runs the checks of `chapter` (only those named in `only`, when given) at `place` and
/// returns each one's outcome by name. `binaries` are the chapter's, built.
pub fn run_checks(
    chapter: &Chapter,
    binaries: &Binaries,
    only: &[String],
    place: Place,
) -> Result<BTreeMap<String, Outcome>> {
    let executable = test_executable(&chapter.test_name)?;
    let mut args: Vec<String> = ["--exact", "--color", "never"].map(String::from).to_vec();
    args.extend(only.iter().cloned());
    let stdout = match place {
        Place::Host => run_on_host(&executable, &args, binaries)?,
        Place::Guest(layout) => {
            // Snapshots cannot be written from the guest (its view of the tree is a
            // throwaway overlay); a mismatch fails the check and shows the difference.
            let mut env = binaries.env();
            env.push(("INSTA_UPDATE".to_string(), "no".to_string()));
            run_in_guest(layout, &executable, &args, &env, &project_root())?.stdout
        }
    };
    Ok(parse_libtest(&stdout))
}

fn run_on_host(executable: &Path, args: &[String], binaries: &Binaries) -> Result<String> {
    let mut checks = as_root(executable);
    checks.args(args).envs(binaries.env()).current_dir(project_root()).stderr(Stdio::inherit());
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
            "FAILED" => Outcome::Fail { output: failure_output(stdout, name) },
            ignored if ignored.starts_with("ignored") => Outcome::Skip {
                why: ignored.split_once(", ").map_or("ignored", |(_, why)| why).to_string(),
            },
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
pub fn report(
    chapter: &Chapter,
    outcomes: &BTreeMap<String, Outcome>,
    place: Place,
) -> Result<Tally> {
    let at = place.label();
    let exercises = exercises::load(chapter)?;
    let mut tally = Tally::default();
    for (name, outcome) in outcomes {
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
                print_failure(&format!("{name}{at}"), name, output, &exercises);
            }
        }
    }
    Ok(tally)
}

fn print_failure(shown: &str, name: &str, output: &str, exercises: &[Exercise]) {
    let owners: Vec<&Exercise> =
        exercises.iter().filter(|exercise| exercise.checks.iter().any(|c| c == name)).collect();
    let ids: Vec<&str> = owners.iter().map(|exercise| exercise.id.as_str()).collect();
    if ids.is_empty() {
        println!("FAIL {shown}");
    } else {
        println!("FAIL {shown} (exercise {})", ids.join(", "));
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
}
