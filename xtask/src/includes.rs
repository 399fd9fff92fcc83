//! The book's `{{#include FILE:ANCHOR}}`s, checked: mdBook renders an include whose file or
//! anchor is missing (renamed, say) as an empty block, silently. The book's build and a tidy
//! test both use this.

use std::fs;
use std::path::Path;

use anyhow::{bail, Result};

/// Every `{{#include …}}` of the page `text`, whose directory is `page_dir`, names a file
/// that exists by an anchor it has (`// ANCHOR: NAME` and `// ANCHOR_END: NAME`); otherwise
/// an error naming each one that does not.
pub fn check_includes(page_dir: &Path, text: &str) -> Result<()> {
    let mut problems = Vec::new();
    for include in text.split("{{#include ").skip(1) {
        let Some(target) = include.split("}}").next() else { continue };
        let target = target.trim();
        let Some((file, anchor)) = target.rsplit_once(':') else {
            problems.push(format!("`{target}` has no anchor: include code by `FILE:ANCHOR`"));
            continue;
        };
        if anchor.chars().all(|c| c.is_ascii_digit()) {
            problems.push(format!("`{target}` includes by line number: use an anchor"));
            continue;
        }
        let Ok(source) = fs::read_to_string(page_dir.join(file)) else {
            problems.push(format!("`{target}`: there is no file {file}"));
            continue;
        };
        let has = |marker: &str| {
            source.lines().any(|line| line.trim().strip_prefix(marker) == Some(anchor))
        };
        if !has("// ANCHOR: ") || !has("// ANCHOR_END: ") {
            problems.push(format!("`{target}`: {file} has no anchor `{anchor}`"));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_or_anchor_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.rs"), "// ANCHOR: here\nfn a() {}\n// ANCHOR_END: here\n")
            .unwrap();
        assert!(check_includes(dir.path(), "{{#include a.rs:here}}").is_ok());
        for (page, problem) in [
            ("{{#include a.rs:there}}", "no anchor `there`"),
            ("{{#include b.rs:here}}", "no file b.rs"),
            ("{{#include a.rs}}", "has no anchor"),
            ("{{#include a.rs:2}}", "line number"),
        ] {
            let err = check_includes(dir.path(), page).unwrap_err().to_string();
            assert!(err.contains(problem), "{page}: {err}");
        }
    }
}
