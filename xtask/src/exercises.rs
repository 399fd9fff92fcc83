//! Exercise regions: `// EXERCISE N.k: instructions` … `// END EXERCISE` in a chapter's
//! sources, described by its exercises.toml. `exercise N` replaces each region's body with
//! `todo!`, `solution N` puts the reference solution back; neither ever loses a learner's work.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xtask::project_root;

use crate::chapters::Chapter;

const START: &str = "// EXERCISE ";
const END: &str = "// END EXERCISE";

/// One `[[exercise]]` of exercises.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    pub id: String,
    pub title: String,
    /// The idea, the man page, the kernel behaviour; never the exact call.
    pub hint: String,
    /// The fuller hint: `cargo xtask hint N.K`, or after a check failed three times in a row.
    #[serde(default)]
    pub hint2: Option<String>,
    pub checks: Vec<String>,
    /// Plausible wrong answers, each of which one of `checks` must catch.
    #[serde(default, rename = "mistake")]
    pub mistakes: Vec<Mistake>,
}

/// One `[[exercise.mistake]]`: a wrong answer, as a whole body for the region or as a patch
/// of the reference body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mistake {
    pub what: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    replace: Option<String>,
    #[serde(default)]
    by: Option<String>,
    /// Why no check can catch it on this machine; the guarantee then reports it as known,
    /// and the chapter's page must quote `what` (a tidy test).
    #[serde(default)]
    pub uncatchable: Option<String>,
}

impl Mistake {
    /// The region's body with this mistake in it, made from the region's `reference` body.
    pub fn apply(&self, reference: &str) -> Result<String> {
        let body = match (&self.body, &self.replace, &self.by) {
            (Some(body), None, None) => body.clone(),
            (None, Some(replace), Some(by)) => {
                let found = reference.matches(replace.as_str()).count();
                if found != 1 {
                    bail!(
                        "mistake `{}`: `replace` must match the reference body exactly once, \
                         and matches it {found} times",
                        self.what
                    );
                }
                reference.replacen(replace.as_str(), by, 1)
            }
            _ => bail!("mistake `{}`: give either `body`, or `replace` and `by`", self.what),
        };
        if body == reference {
            bail!("mistake `{}` leaves the reference body as it is", self.what);
        }
        Ok(if body.ends_with('\n') { body } else { format!("{body}\n") })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExercisesToml {
    exercise: Vec<Exercise>,
}

/// The exercises of `chapter`, from its exercises.toml.
pub fn load(chapter: &Chapter) -> Result<Vec<Exercise>> {
    let path = chapter.dir.join("exercises.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let parsed: ExercisesToml =
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(parsed.exercise)
}

/// A source file cut into plain text and exercise regions.
#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Region { id: String, marker: String, body: String, end: String },
}

fn parse(text: &str) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut lines = text.split_inclusive('\n');
    let mut plain = String::new();
    while let Some(line) = lines.next() {
        let Some(id) = exercise_id(line) else {
            plain.push_str(line);
            continue;
        };
        parts.push(Part::Text(std::mem::take(&mut plain)));
        let mut body = String::new();
        let end = loop {
            match lines.next() {
                Some(end) if end.trim() == END => break end.to_string(),
                Some(line) if exercise_id(line).is_some() => {
                    bail!("exercise {id} starts before the one above it ends")
                }
                Some(line) => body.push_str(line),
                None => bail!("exercise {id} has no `{END}` line"),
            }
        };
        parts.push(Part::Region { id, marker: line.to_string(), body, end });
    }
    parts.push(Part::Text(plain));
    Ok(parts)
}

/// `1.2` from `    // EXERCISE 1.2: do this`.
fn exercise_id(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix(START)?;
    let (id, _instructions) = rest.split_once(':')?;
    Some(id.trim().to_string())
}

fn join(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|part| match part {
            Part::Text(text) => text.clone(),
            Part::Region { marker, body, end, .. } => format!("{marker}{body}{end}"),
        })
        .collect()
}

/// The body a stripped region has: `todo!` under the instructions, indented like them.
fn todo_body(marker: &str, id: &str) -> String {
    let indent = &marker[..marker.len() - marker.trim_start().len()];
    format!("{indent}todo!(\"exercise {id}\");\n")
}

/// The bodies of every region in `text`, by exercise id.
fn bodies(text: &str) -> Result<BTreeMap<String, String>> {
    Ok(parse(text)?
        .into_iter()
        .filter_map(|part| match part {
            Part::Region { id, body, .. } => Some((id, body)),
            Part::Text(_) => None,
        })
        .collect())
}

/// `text` with the body of each region that `select` picks replaced by `todo!`.
pub fn strip(text: &str, select: impl Fn(&str) -> bool) -> Result<String> {
    rewrite(text, |id| select(id).then_some(Body::Stripped))
}

/// What a region holds in a variant of a chapter's sources.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Stripped,
    Mistaken(&'a Mistake),
}

/// `text` with each region's body replaced as `choose` says, given the region's id; regions it
/// gives None for stay as they are.
fn rewrite<'a>(text: &str, choose: impl Fn(&str) -> Option<Body<'a>>) -> Result<String> {
    let mut parts = parse(text)?;
    for part in &mut parts {
        if let Part::Region { id, marker, body, .. } = part {
            match choose(id) {
                Some(Body::Stripped) => *body = todo_body(marker, id),
                Some(Body::Mistaken(mistake)) => {
                    *body = mistake.apply(body).with_context(|| format!("exercise {id}"))?
                }
                None => {}
            }
        }
    }
    Ok(join(&parts))
}

/// `text` with every region's body taken from `solution`.
fn restore(text: &str, solution: &str) -> Result<String> {
    let solved = bodies(solution)?;
    let mut parts = parse(text)?;
    for part in &mut parts {
        if let Part::Region { id, body, .. } = part {
            *body = solved.get(id).cloned().with_context(|| format!("no solution for {id}"))?;
        }
    }
    Ok(join(&parts))
}

/// The exercise ids whose bodies in `text` are neither stripped nor the solution's: a
/// learner's work.
fn attempts(text: &str, solution: &str) -> Result<Vec<String>> {
    let solved = bodies(solution)?;
    let mut worked_on = Vec::new();
    for part in parse(text)? {
        if let Part::Region { id, marker, body, .. } = part {
            if body != todo_body(&marker, &id) && solved.get(&id) != Some(&body) {
                worked_on.push(id);
            }
        }
    }
    Ok(worked_on)
}

/// Every source file of `chapter` that holds an exercise region.
pub fn files_with_regions(chapter: &Chapter) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![chapter.dir.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs")
                && fs::read_to_string(&path)?.lines().any(|line| exercise_id(line).is_some())
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
/// The reference body of every region of `chapter`, by exercise id: what the files hold.
pub fn reference_bodies(chapter: &Chapter) -> Result<BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    for file in files_with_regions(chapter)? {
        all.extend(bodies(&fs::read_to_string(&file)?)?);
    }
    Ok(all)
}

#[cfg(test)]
/// Every exercise id in `chapter`'s sources, in source order per file.
pub fn region_ids(chapter: &Chapter) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for file in files_with_regions(chapter)? {
        ids.extend(bodies(&fs::read_to_string(&file)?)?.into_keys());
    }
    Ok(ids)
}

fn workshop_dir(kind: &str, chapter: &Chapter) -> PathBuf {
    project_root().join(".crabbox").join(kind).join(format!("{:02}", chapter.number))
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix(project_root()).unwrap_or(path)
}

/// The reference solution of `file`: the committed file, unless what is committed is
/// stripped (a learner committed their work), then the copy `exercise N` saved.
fn solution_of(chapter: &Chapter, file: &Path) -> Result<String> {
    if let Some(committed) = committed_text(file).filter(|text| !is_stripped(text)) {
        return Ok(committed);
    }
    let saved = workshop_dir("solutions", chapter).join(relative(file));
    fs::read_to_string(&saved).with_context(|| {
        format!("no solution for {}: git has none and none was saved", relative(file).display())
    })
}

fn committed_text(file: &Path) -> Option<String> {
    let output = std::process::Command::new("git")
        .current_dir(project_root())
        .arg("show")
        .arg(format!("HEAD:{}", relative(file).display()))
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8(output.stdout).ok()).flatten()
}

fn is_stripped(text: &str) -> bool {
    parse(text).is_ok_and(|parts| {
        parts.iter().any(|part| {
            matches!(part, Part::Region { id, marker, body, .. } if *body == todo_body(marker, id))
        })
    })
}

/// Copies the learner's version of `file` aside before it is rewritten.
fn save_attempt(chapter: &Chapter, file: &Path, text: &str, ids: &[String]) -> Result<()> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let name = format!("{}.{stamp}", relative(file).display());
    let copy = workshop_dir("attempts", chapter).join(name);
    fs::create_dir_all(copy.parent().unwrap())?;
    fs::write(&copy, text)?;
    println!("your work on exercise {} is saved in {}", ids.join(", "), relative(&copy).display());
    Ok(())
}

/// `cargo xtask exercise N`: save the solution, then strip every region of chapter N.
pub fn exercise(chapter: &Chapter) -> Result<()> {
    for file in files_with_regions(chapter)? {
        let text = fs::read_to_string(&file)?;
        let solution = solution_of(chapter, &file)?;
        let saved = workshop_dir("solutions", chapter).join(relative(&file));
        fs::create_dir_all(saved.parent().unwrap())?;
        fs::write(&saved, &solution)?;
        let worked_on = attempts(&text, &solution)?;
        if !worked_on.is_empty() {
            save_attempt(chapter, &file, &text, &worked_on)?;
        }
        fs::write(&file, strip(&text, |_| true)?)?;
        println!("stripped {}", relative(&file).display());
    }
    println!(
        "Chapter {n}'s exercises are ready: read the `// EXERCISE` comments, fill in each \
         `todo!`, and run `cargo xtask check-chapter {n}`.",
        n = chapter.number
    );
    Ok(())
}

/// `cargo xtask solution N`: put the reference solution back into every region.
pub fn solution(chapter: &Chapter) -> Result<()> {
    for file in files_with_regions(chapter)? {
        let text = fs::read_to_string(&file)?;
        let solution = solution_of(chapter, &file)?;
        let worked_on = attempts(&text, &solution)?;
        if !worked_on.is_empty() {
            save_attempt(chapter, &file, &text, &worked_on)?;
        }
        fs::write(&file, restore(&text, &solution)?)?;
        println!("restored {}", relative(&file).display());
    }
    Ok(())
}

/// A variant of a chapter's sources, written in place: the regions named in it hold the body
/// it gives them, every other region its reference solution (what the files hold). Dropping
/// it puts every file back: `cargo xtask test` must leave the tree as it found it, also when
/// a step fails.
#[must_use = "the sources are put back when the variant is dropped"]
pub struct Variant {
    _restore: Vec<RestoreOnDrop>,
}

impl Variant {
    pub fn write(chapter: &Chapter, bodies: &BTreeMap<String, Body>) -> Result<Variant> {
        let mut restore = Vec::new();
        for file in files_with_regions(chapter)? {
            let original = fs::read_to_string(&file)?;
            let changed = rewrite(&original, |id| bodies.get(id).copied())?;
            if changed != original {
                restore.push(RestoreOnDrop { file: file.clone(), original });
                fs::write(&file, changed)?;
            }
        }
        Ok(Variant { _restore: restore })
    }
}

struct RestoreOnDrop {
    file: PathBuf,
    original: String,
}

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        if let Err(err) = fs::write(&self.file, &self.original) {
            eprintln!("could not restore {}: {err}", self.file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOLVED: &str = "fn a() -> u8 {\n    // EXERCISE 1.1: return one\n    let one = 1;\n    one\n    // END EXERCISE\n}\n";
    const STRIPPED: &str = "fn a() -> u8 {\n    // EXERCISE 1.1: return one\n    todo!(\"exercise 1.1\");\n    // END EXERCISE\n}\n";

    #[test]
    fn stripping_keeps_the_instructions_and_is_idempotent() {
        let stripped = strip(SOLVED, |_| true).unwrap();
        assert_eq!(stripped, STRIPPED);
        assert_eq!(strip(&stripped, |_| true).unwrap(), STRIPPED);
    }

    #[test]
    fn restoring_brings_back_the_solution() {
        assert_eq!(restore(STRIPPED, SOLVED).unwrap(), SOLVED);
    }

    #[test]
    fn a_learners_work_is_recognised() {
        let attempt = STRIPPED.replace("todo!(\"exercise 1.1\");", "2");
        assert_eq!(attempts(&attempt, SOLVED).unwrap(), ["1.1"]);
        assert!(attempts(STRIPPED, SOLVED).unwrap().is_empty());
        assert!(attempts(SOLVED, SOLVED).unwrap().is_empty());
    }

    #[test]
    fn a_stripped_file_is_not_a_solution() {
        assert!(is_stripped(STRIPPED));
        assert!(!is_stripped(SOLVED));
    }

    fn mistake(toml: &str) -> Mistake {
        toml::from_str(&format!("what = \"a mistake\"\n{toml}")).unwrap()
    }

    #[test]
    fn a_mistake_patches_the_reference_body_once() {
        let reference = "    let one = 1;\n    one\n";
        let patched = mistake("replace = \"= 1\"\nby = \"= 2\"").apply(reference).unwrap();
        assert_eq!(patched, "    let one = 2;\n    one\n");
        let twice = mistake("replace = \"one\"\nby = \"two\"").apply(reference).unwrap_err();
        assert!(twice.to_string().contains("2 times"), "{twice}");
        let body = mistake("body = \"    0\"").apply(reference).unwrap();
        assert_eq!(body, "    0\n");
        assert!(mistake("replace = \"one\"").apply(reference).is_err());
        assert!(toml::from_str::<Mistake>("what = \"x\"\nbdy = \"0\"").is_err());
    }

    #[test]
    fn a_variant_rewrites_only_the_regions_it_names() {
        let two = mistake("replace = \"= 1\"\nby = \"= 2\"");
        let text = format!("{SOLVED}{}", SOLVED.replace("1.1", "1.2"));
        let variant = rewrite(&text, |id| (id == "1.1").then_some(Body::Mistaken(&two))).unwrap();
        assert_eq!(
            variant,
            format!("{}{}", SOLVED.replace("= 1", "= 2"), SOLVED.replace("1.1", "1.2"))
        );
    }

    #[test]
    fn an_unterminated_region_is_an_error() {
        let broken = SOLVED.replace("// END EXERCISE\n", "");
        assert!(parse(&broken).is_err());
    }
}
