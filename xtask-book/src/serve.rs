//! `xtask-book serve`: the built book over HTTP on 127.0.0.1, files only (mdBook as a
//! library has no server).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path};

use anyhow::{Context, Result};

pub fn serve_dir(dir: &Path) -> Result<()> {
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
