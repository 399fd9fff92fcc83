//! `cargo xtask book [--serve]`: the book, built with mdBook as a library. One preprocessor
//! of our own expands `{{#transcript NAME}}` from tests/snapshots/NAME.snap, so every
//! transcript the book shows is one the tests re-create; a missing snapshot fails the build.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use mdbook_driver::MDBook;
use mdbook_preprocessor::book::{Book, BookItem};
use mdbook_preprocessor::{Preprocessor, PreprocessorContext};
use xtask::project_root;

const END_EXERCISE: &str = "// END EXERCISE";

/// `cargo xtask book`: builds book/book/ and, with `serve`, serves it on 127.0.0.1.
pub fn book(serve: bool) -> Result<()> {
    let out = build()?;
    println!("the book is in {}", out.join("index.html").display());
    if serve {
        serve_dir(&out)?;
    }
    Ok(())
}

pub fn build() -> Result<PathBuf> {
    let root = project_root().join("book");
    let mut book = MDBook::load(&root).context("load the book")?;
    book.with_preprocessor(Transcripts);
    book.build().context("build the book")?;
    Ok(book.build_dir_for("html"))
}

struct Transcripts;

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

fn serve_dir(dir: &Path) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:3000").context("listen on 127.0.0.1:3000")?;
    println!("serving the book on http://127.0.0.1:3000/ (Ctrl-C stops)");
    for stream in listener.incoming() {
        if let Err(err) = answer(stream?, dir) {
            eprintln!("book server: {err}");
        }
    }
    Ok(())
}

fn answer(mut stream: TcpStream, dir: &Path) -> Result<()> {
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let relative =
        Path::new(target.split(['?', '#']).next().unwrap_or("/").trim_start_matches('/'));
    let mut file = dir.join(relative);
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        file = dir.join("404.html");
    } else if file.is_dir() {
        file = file.join("index.html");
    }
    let (status, body) = match fs::read(&file) {
        Ok(body) => ("200 OK", body),
        Err(_) => ("404 Not Found", fs::read(dir.join("404.html")).unwrap_or_default()),
    };
    let kind = content_type(&file);
    write!(stream, "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    stream.write_all(&body)?;
    Ok(())
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|ext| ext.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
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
