//! crabbox's mdBook preprocessor, run after mdBook's `links` (which does the `{{#include}}`s):
//!
//! - it fails the build when a page includes a file or an anchor that does not exist (mdBook
//!   would render an empty block);
//! - it expands `{{#transcript NAME}}` from tests/snapshots/NAME.snap, so every transcript
//!   the book shows is one the tests re-create, and fails the build when one is missing;
//! - it folds each exercise region: the `// EXERCISE N.K:` lines stay in the code, the body
//!   becomes the `todo!()` that `cargo xtask exercise N` leaves there, and the reference body
//!   follows the code block in a closed "reference solution" block the reader opens on
//!   purpose. A book built from stripped sources shows the `todo!()` alone.

use std::fs;

use anyhow::{bail, Context, Result};
use mdbook_preprocessor::book::{Book, BookItem};
use mdbook_preprocessor::{Preprocessor, PreprocessorContext};

use xtask::includes::check_includes;

use crate::project_root;

const START_EXERCISE: &str = "// EXERCISE ";
const END_EXERCISE: &str = "// END EXERCISE";

pub struct Transcripts;

impl Preprocessor for Transcripts {
    fn name(&self) -> &str {
        "crabbox-transcripts"
    }

    fn run(&self, _ctx: &PreprocessorContext, mut book: Book) -> Result<Book> {
        let mut failure = None;
        book.for_each_mut(|item| {
            if let BookItem::Chapter(chapter) = item {
                let page = chapter
                    .source_path
                    .as_ref()
                    .map(|path| project_root().join("book/src").join(path));
                let includes = match page {
                    Some(page) => fs::read_to_string(&page)
                        .with_context(|| format!("read {}", page.display()))
                        .and_then(|raw| check_includes(page.parent().unwrap_or(&page), &raw)),
                    None => Ok(()),
                };
                match includes.and_then(|()| expand(&chapter.content)) {
                    Ok(content) => chapter.content = content,
                    Err(err) => {
                        failure.get_or_insert(err.context(format!("in {}", chapter.name)));
                    }
                }
            }
        });
        failure.map_or(Ok(book), Err)
    }
}

/// Expands every `{{#transcript NAME}}` and folds the exercise regions of the included code.
fn expand(content: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = content;
    while let Some(start) = rest.find("{{#transcript ") {
        let end = rest[start..].find("}}").context("a {{#transcript}} is not closed")? + start;
        let name = rest[start + "{{#transcript ".len()..end].trim();
        out.push_str(&rest[..start]);
        out.push_str(&format!("```console\n{}```", transcript(name)?));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(fold_exercises(&out))
}

/// `content` with each exercise region in a code block folded: see the module comment.
fn fold_exercises(content: &str) -> String {
    let mut out = String::new();
    // The open code block's fence line, and the reference bodies found in it so far.
    let mut block: Option<&str> = None;
    let mut solutions: Vec<(String, String)> = Vec::new();
    let mut lines = content.lines();
    while let Some(line) = lines.next() {
        let fence = line.trim_start().starts_with("```");
        match (block, fence) {
            (None, true) => block = Some(line),
            (Some(open), true) => {
                out.push_str(line);
                out.push('\n');
                for (id, body) in solutions.drain(..) {
                    out.push_str(&folded(open.trim_start(), &id, &body));
                }
                block = None;
                continue;
            }
            _ => {}
        }
        let exercise =
            line.trim_start().strip_prefix(START_EXERCISE).and_then(|rest| rest.split_once(':'));
        match (block, exercise) {
            (Some(_), Some((id, _))) => {
                let body: Vec<&str> =
                    lines.by_ref().take_while(|line| line.trim() != END_EXERCISE).collect();
                let indent = &line[..line.len() - line.trim_start().len()];
                let todo = format!("{indent}todo!(\"exercise {}\");", id.trim());
                out.push_str(line);
                out.push('\n');
                out.push_str(&todo);
                out.push('\n');
                if body.iter().map(|line| line.trim()).ne([todo.trim()]) {
                    solutions.push((id.trim().to_string(), dedent(&body)));
                }
            }
            _ if line.trim() == END_EXERCISE => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The closed block that holds exercise `id`'s reference `body`, as a code block opened by
/// `fence`.
fn folded(fence: &str, id: &str, body: &str) -> String {
    format!(
        "\n<details class=\"crabbox-solution\">\n<summary>Reference solution of exercise {id} \
         (try it yourself first)</summary>\n\n{fence}\n{body}```\n\n</details>\n\n"
    )
}

/// `lines` without the indentation they all share, each ended by a newline.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    lines.iter().map(|line| format!("{}\n", line.get(indent..).unwrap_or("").trim_end())).collect()
}

/// The body of tests/snapshots/NAME.snap: everything after its header.
pub fn transcript(name: &str) -> Result<String> {
    let path = project_root().join("tests/snapshots").join(format!("{name}.snap"));
    let Ok(snapshot) = fs::read_to_string(&path) else {
        bail!("the book shows transcript {name}, but no test makes {}", path.display());
    };
    let body = snapshot.splitn(3, "---\n").nth(2).context("a snapshot without a header")?;
    Ok(if body.ends_with('\n') { body.to_string() } else { format!("{body}\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_without_a_snapshot_fails_the_build() {
        let err = expand("{{#transcript ch01_chroot__no_such_snapshot}}").unwrap_err();
        assert!(err.to_string().contains("no test makes"), "{err}");
    }

    #[test]
    fn transcripts_expand_to_the_snapshot_body() {
        let page = expand("before\n{{#transcript ch01_chroot__ls_root}}\nafter\n").unwrap();
        assert!(page.starts_with("before\n```console\n$ ch01 run [ROOTFS] -- ls /\n"), "{page}");
        assert!(page.ends_with("```\nafter\n"), "{page}");
    }

    #[test]
    fn end_exercise_markers_are_dropped() {
        assert_eq!(expand("a\n    // END EXERCISE\nb\n").unwrap(), "a\nb\n");
    }

    const CODE: &str = "```rust,ignore\nfn one() -> u8 {\n    // EXERCISE 1.1: return one\n    let one = 1;\n    one\n    // END EXERCISE\n}\n```\ntext\n";

    #[test]
    fn an_exercise_region_shows_its_todo_and_folds_its_solution() {
        let page = expand(CODE).unwrap();
        let (code, solution) = page.split_once("<details").unwrap();
        assert_eq!(
            code,
            "```rust,ignore\nfn one() -> u8 {\n    // EXERCISE 1.1: return one\n    todo!(\"exercise 1.1\");\n}\n```\n\n"
        );
        assert!(solution.contains("<summary>Reference solution of exercise 1.1"), "{solution}");
        assert!(
            solution.contains("```rust,ignore\nlet one = 1;\none\n```\n\n</details>\n\ntext\n"),
            "{solution}"
        );
    }

    #[test]
    fn a_stripped_region_has_no_solution_to_fold() {
        let stripped =
            CODE.replace("    let one = 1;\n    one\n", "    todo!(\"exercise 1.1\");\n");
        let page = expand(&stripped).unwrap();
        assert!(!page.contains("<details"), "{page}");
        assert!(page.contains("    todo!(\"exercise 1.1\");\n}\n```\ntext\n"), "{page}");
    }
}
