//! crabbox's mdBook preprocessor, run after mdBook's `links` (which does the `{{#include}}`s):
//! it expands `{{#transcript NAME}}` from tests/snapshots/NAME.snap, so every transcript the
//! book shows is one the tests re-create, and fails the build when a snapshot is missing.

use std::fs;

use anyhow::{bail, Context, Result};
use mdbook_preprocessor::book::{Book, BookItem};
use mdbook_preprocessor::{Preprocessor, PreprocessorContext};

use crate::project_root;

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
                match expand(&chapter.content) {
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

/// Expands every `{{#transcript NAME}}` and drops the `// END EXERCISE` lines that the
/// included code carries.
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
    Ok(out.lines().filter(|line| line.trim() != END_EXERCISE).collect::<Vec<_>>().join("\n") + "\n")
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
}
