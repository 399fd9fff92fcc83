//! Hostile layers, as a user meets them: a rootfs tar made by someone else, imported with
//! `ch06 image import`. Each tar is written by GNU tar from files the check makes, and aims
//! at a sentinel directory of the check's own, never at a real host path. A refused tar
//! leaves no image, no blob and no layer; an accepted one writes nothing outside the layer.
//! (The unit tests of chapters/06-layers/src/unpack.rs cover every class entry by entry.)

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::common::{self, Transcript};

/// A sentinel directory that no layer may write into, and a work directory for the tar.
struct Attack {
    sentinel: TempDir,
    work: TempDir,
    store: TempDir,
}

impl Attack {
    fn new() -> Attack {
        Attack { sentinel: common::temp_dir(), work: common::temp_dir(), store: common::temp_dir() }
    }

    fn sentinel(&self) -> &Path {
        self.sentinel.path()
    }

    /// `tar ARGS…` run in the work directory, writing `evil.tar` there.
    fn tar(&self, args: &[&str]) {
        let status = Command::new("tar").current_dir(self.work.path()).args(args).status().unwrap();
        assert!(status.success(), "tar {args:?}");
    }

    fn import(&self) -> Transcript {
        let mut ch06 = common::command("ch06");
        ch06.arg("--root").arg(self.store.path()).args(["image", "import"]);
        Transcript::run(ch06.arg(self.work.path().join("evil.tar")).arg("evil"))
    }

    /// What the sentinel directory holds: nothing, unless an attack got through.
    fn reached(&self) -> Vec<String> {
        let entries = fs::read_dir(self.sentinel()).unwrap();
        entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    /// Whether the store holds an image, a blob or a layer.
    fn store_is_empty(&self) -> bool {
        let count = |dir: &str| fs::read_dir(self.store.path().join(dir)).map_or(0, |d| d.count());
        count("images/blobs/sha256") == 0 && count("layers") == 0 && count("ingest") == 0
    }
}

#[test]
fn a_layer_whose_names_climb_out_with_dot_dot_is_refused_and_leaves_nothing() {
    let attack = Attack::new();
    fs::write(attack.work.path().join("planted"), "planted").unwrap();
    // -P keeps the `..` that the transform puts in front of the name.
    let up = format!("s,^,../../../../../../..{}/,", attack.sentinel().display());
    attack.tar(&["-cPf", "evil.tar", "--transform", &up, "planted"]);
    let transcript = attack.import();
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(transcript.output.contains("`..`"), "the error names the problem: {transcript}");
    assert_eq!(attack.reached(), Vec::<String>::new(), "{transcript}");
    assert!(attack.store_is_empty(), "a refused layer leaves nothing in the store");
}

#[test]
fn a_file_written_through_a_symlinked_parent_stays_inside_the_layer() {
    let attack = Attack::new();
    let work = attack.work.path();
    symlink(attack.sentinel(), work.join("escape")).unwrap();
    attack.tar(&["-cf", "evil.tar", "escape"]);
    // Then a file below the symlink, appended from a directory where `escape` is a real one.
    fs::create_dir_all(work.join("second/escape")).unwrap();
    fs::write(work.join("second/escape/planted"), "planted").unwrap();
    attack.tar(&["-rf", "evil.tar", "-C", "second", "escape/planted"]);
    let transcript = attack.import();
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(attack.reached(), Vec::<String>::new(), "the file went through the symlink");
}

#[test]
fn a_file_of_the_name_of_an_earlier_symlink_replaces_it_instead_of_writing_through_it() {
    let attack = Attack::new();
    let work = attack.work.path();
    symlink(attack.sentinel().join("planted"), work.join("target")).unwrap();
    attack.tar(&["-cf", "evil.tar", "target"]);
    fs::create_dir(work.join("second")).unwrap();
    fs::write(work.join("second/target"), "planted").unwrap();
    attack.tar(&["-rf", "evil.tar", "-C", "second", "target"]);
    let transcript = attack.import();
    assert_eq!(transcript.status, 0, "{transcript}");
    assert_eq!(attack.reached(), Vec::<String>::new(), "the file was written through the symlink");
}

#[test]
fn a_hard_link_to_a_file_outside_the_layer_is_refused() {
    let attack = Attack::new();
    let work = attack.work.path();
    fs::write(attack.sentinel().join("secret"), "secret").unwrap();
    fs::hard_link(attack.sentinel().join("secret"), work.join("link")).unwrap();
    fs::write(work.join("file"), "file").unwrap();
    // A hard link entry whose target is the sentinel's file, by its absolute path: GNU tar
    // records the second name of an inode as a link to the first it archived.
    let secret = attack.sentinel().join("secret");
    attack.tar(&["-cPf", "evil.tar", secret.to_str().unwrap(), "link"]);
    let transcript = attack.import();
    // The link's target resolves inside the layer, where the first entry put `secret`: a
    // link inside, or a refusal; never a link to the host's file.
    let layers = attack.store.path().join("layers");
    for layer in fs::read_dir(&layers).into_iter().flatten().flatten() {
        let linked = layer.path().join("link");
        if let Ok(text) = fs::read_to_string(&linked) {
            fs::write(&linked, "changed").unwrap();
            assert_eq!(text, "secret");
        }
    }
    assert_eq!(fs::read_to_string(secret).unwrap(), "secret", "{transcript}");
}
