//! The image store and its formats: every format loads to the same image id, skopeo reads
//! what crabbox stored and crabbox loads what skopeo and umoci wrote, and a tampered,
//! hostile or interrupted load leaves no image listed and nothing behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, Transcript};

/// The busybox image in each format the checks load, made from the busybox rootfs by umoci
/// and skopeo as a user would make them.
struct TestImages {
    /// An OCI layout written by umoci, its image tagged `busybox:latest`.
    layout: PathBuf,
    /// The same image copied by skopeo into an OCI layout of its own, as `busybox:latest`.
    skopeo_layout: PathBuf,
    /// `skopeo copy … docker-archive:`, the classic `docker save` format.
    docker_archive: PathBuf,
    oci_archive: PathBuf,
    /// A docker-archive with OCI files beside it, as docker 25's `docker save` writes it.
    docker_with_oci: PathBuf,
}

/// The test images: xtask's (`cargo xtask rootfs`), and two more made from them once, in
/// a folder inside xtask's that goes when xtask makes its images again.
fn test_images() -> TestImages {
    let made = common::test_images();
    let (layout, docker_archive) = (made.busybox_layout(), made.busybox_docker_archive());
    let dir = made.dir.join("store-checks");
    xtask::build_in_place(&dir, |staging| {
        Ok(build_test_images(staging, &layout, &docker_archive)?)
    })
    .expect("make the store checks' images with skopeo");
    TestImages {
        layout,
        skopeo_layout: dir.join("skopeo-oci"),
        docker_archive,
        oci_archive: made.busybox_oci_archive(),
        docker_with_oci: dir.join("docker-with-oci.tar"),
    }
}

/// Makes, in `dir`, the layout skopeo writes of the busybox `layout`, and docker 25's
/// archive of the busybox `docker_archive`.
fn build_test_images(dir: &Path, layout: &Path, docker_archive: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let source = format!("oci:{}:busybox:latest", layout.display());
    let destination = format!("oci:{}:busybox:latest", dir.join("skopeo-oci").display());
    run(Command::new("skopeo").args(["copy", "-q", &source, &destination]))?;
    docker_with_oci(docker_archive, &dir.join("docker-with-oci.tar"))
}

/// Makes docker 25's `docker save` format from a classic docker-archive: the same config and
/// layer as blobs of an OCI layout, with manifest.json naming them by their blob paths, and
/// an index that names the image by tag and, in containerd's annotation, in full.
fn docker_with_oci(docker_archive: &Path, out: &Path) -> io::Result<()> {
    let classic = common::temp_dir();
    run(Command::new("tar").arg("-xf").arg(docker_archive).arg("-C").arg(classic.path()))?;
    let manifest_json = fs::read_to_string(classic.path().join("manifest.json"))?;
    let config_name = text_between(&manifest_json, "\"Config\":\"", "\"");
    let layer_name = text_between(&manifest_json, "\"Layers\":[\"", "\"");
    let layout = common::temp_dir();
    let config = add_blob(layout.path(), &fs::read(classic.path().join(config_name))?)?;
    let layer = add_blob(layout.path(), &fs::read(classic.path().join(layer_name))?)?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        config.0, config.1, layer.0, layer.1
    );
    let manifest = add_blob(layout.path(), manifest.as_bytes())?;
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/library/busybox:latest","org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
        manifest.0, manifest.1
    );
    fs::write(layout.path().join("index.json"), index)?;
    fs::write(layout.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let docker_manifest = format!(
        r#"[{{"Config":"blobs/sha256/{}","RepoTags":["busybox:latest"],"Layers":["blobs/sha256/{}"]}}]"#,
        &config.0[7..],
        &layer.0[7..]
    );
    fs::write(layout.path().join("manifest.json"), docker_manifest)?;
    run(Command::new("tar").arg("-cf").arg(out).arg("-C").arg(layout.path()).arg("."))
}

/// Writes `bytes` as a blob of the layout `dir`; returns its digest and size.
fn add_blob(dir: &Path, bytes: &[u8]) -> io::Result<(String, usize)> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let staging = blobs.join("new");
    fs::write(&staging, bytes)?;
    let digest = sha256_of(&staging);
    fs::rename(&staging, blobs.join(&digest[7..]))?;
    Ok((digest, bytes.len()))
}

/// Runs a tool that makes test images; its failure is the check's (with what it said).
fn run(command: &mut Command) -> io::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!("{command:?} failed: {said}")));
    }
    Ok(())
}

/// `sha256:` and the hex digest of the file at `path`, as sha256sum computes it.
fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    let text = String::from_utf8(output.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().expect("sha256sum prints a digest"))
}

/// The text in `text` after the first `start`, up to the next `end`.
fn text_between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let after = text.split_once(start).unwrap_or_else(|| panic!("no {start} in {text}")).1;
    after.split_once(end).unwrap_or_else(|| panic!("no {end} after {start} in {text}")).0
}

/// The digest in a JSON object's text: `sha256:` and 64 hex digits.
fn digest_in(object: &str) -> String {
    let at = object.find("sha256:").unwrap_or_else(|| panic!("no digest in {object}"));
    object[at..at + 71].to_string()
}

/// The manifest of the test layout's image, as skopeo reads it.
fn layout_manifest(layout: &Path) -> String {
    let image = format!("oci:{}:busybox:latest", layout.display());
    let output = Command::new("skopeo").args(["inspect", "--raw", &image]).output().unwrap();
    assert!(output.status.success(), "skopeo inspect {image}");
    String::from_utf8(output.stdout).unwrap()
}

/// The image id the test images have: the digest of the config that umoci wrote.
fn busybox_id(images: &TestImages) -> String {
    digest_in(text_between(&layout_manifest(&images.layout), "\"config\"", "}"))
}

/// Runs `ch06 --root ROOT ARGS…` and keeps its transcript.
fn ch06(root: &Path, args: &[&str]) -> Transcript {
    let mut command = common::command("ch06");
    command.arg("--root").arg(root).args(args);
    Transcript::run(&mut command)
}

/// What a `ch06` command that must succeed printed.
fn ch06_ok(root: &Path, args: &[&str]) -> String {
    let transcript = ch06(root, args);
    assert_eq!(transcript.status, 0, "{transcript}");
    transcript.output
}

/// A path as a command argument.
fn text(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// The rows of `image ls`: repository, tag, image id.
fn listed(root: &Path) -> Vec<(String, String, String)> {
    let output = ch06_ok(root, &["image", "ls"]);
    let mut lines = output.lines();
    let header = lines.next().expect("a header").split("   ").map(str::trim);
    let header: Vec<&str> = header.filter(|cell| !cell.is_empty()).collect();
    assert_eq!(header, ["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]);
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells[0].to_string(), cells[1].to_string(), cells[2].to_string())
        })
        .collect()
}

/// The row of `image ls` for the busybox test image of id `id`.
fn busybox_row(id: &str) -> (String, String, String) {
    ("busybox".to_string(), "latest".to_string(), id[7..19].to_string())
}

/// The names of the files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap_or_else(|err| panic!("list {}: {err}", dir.display()));
    entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// Checks that a refused load left the store as it was: no image, no blob, nothing in ingest.
fn assert_store_empty(root: &Path) {
    assert_eq!(listed(root), vec![], "no image is listed");
    assert_eq!(files_in(&root.join("images/blobs/sha256")), Vec::<String>::new(), "no blob stays");
    assert_eq!(files_in(&root.join("ingest")), Vec::<String>::new(), "nothing stays in ingest/");
}

#[test]
fn every_format_loads_to_the_same_image_id() {
    let images = test_images();
    let id = busybox_id(&images);
    let shared = common::temp_dir();
    let formats = [
        &images.layout,
        &images.skopeo_layout,
        &images.docker_archive,
        &images.oci_archive,
        &images.docker_with_oci,
    ];
    for path in formats {
        let root = common::temp_dir();
        let output = ch06_ok(root.path(), &["image", "load", text(path)]);
        assert_eq!(output, "Loaded image: busybox:latest\n", "{}", path.display());
        assert_eq!(listed(root.path()), vec![busybox_row(&id)], "{}", path.display());
        ch06_ok(shared.path(), &["image", "load", text(path)]);
    }
    assert_eq!(listed(shared.path()), vec![busybox_row(&id)], "five loads of one image are one");
    let config = ch06_ok(shared.path(), &["image", "inspect", &id[7..19]]);
    assert!(config.contains("\"Cmd\"") && config.contains("\"sh\""), "{config}");
    assert_eq!(config, ch06_ok(shared.path(), &["image", "inspect", "docker.io/library/busybox"]));
}

#[test]
fn umoci_unpacks_what_the_store_holds() {
    let images = test_images();
    let root = common::temp_dir();
    ch06_ok(root.path(), &["image", "load", text(&images.docker_archive)]);
    let bundle = common::temp_dir();
    let stored = format!("{}/images:busybox:latest", root.path().display());
    let rootfs = bundle.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &stored]).arg(&rootfs)).unwrap();
    let os_release = fs::read_to_string(rootfs.join("rootfs/etc/os-release")).unwrap();
    assert!(os_release.contains("crabbox"), "umoci unpacked the busybox rootfs: {os_release}");
}

#[test]
fn skopeo_reads_the_store_and_what_it_copies_out_loads_back() {
    let images = test_images();
    let id = busybox_id(&images);
    let root = common::temp_dir();
    ch06_ok(root.path(), &["image", "load", text(&images.docker_archive)]);
    let stored = format!("oci:{}/images:busybox:latest", root.path().display());
    let config = Command::new("skopeo").args(["inspect", "--raw", "--config", &stored]).output();
    let config = config.expect("run skopeo inspect");
    assert!(config.status.success(), "skopeo inspect {stored}");
    let out = common::temp_dir();
    fs::write(out.path().join("config.json"), &config.stdout).unwrap();
    assert_eq!(sha256_of(&out.path().join("config.json")), id, "skopeo reads the config as loaded");
    let copy = out.path().join("copy.tar");
    let destination = format!("docker-archive:{}:busybox:latest", copy.display());
    run(Command::new("skopeo").args(["copy", "-q", &stored, &destination])).unwrap();
    let again = common::temp_dir();
    ch06_ok(again.path(), &["image", "load", text(&copy)]);
    assert_eq!(listed(again.path()), vec![busybox_row(&id)]);
}

#[test]
fn a_saved_image_loads_back_with_its_id_and_skopeo_reads_it() {
    let images = test_images();
    let id = busybox_id(&images);
    let root = common::temp_dir();
    ch06_ok(root.path(), &["image", "load", text(&images.oci_archive)]);
    let out = common::temp_dir();
    for (format, transport) in
        [("docker-archive", "docker-archive:"), ("oci-archive", "oci-archive:"), ("oci", "oci:")]
    {
        let saved = out.path().join(format);
        ch06_ok(root.path(), &["image", "save", "busybox", "-o", text(&saved), "--format", format]);
        let again = common::temp_dir();
        ch06_ok(again.path(), &["image", "load", text(&saved)]);
        assert_eq!(listed(again.path()), vec![busybox_row(&id)], "{format}");
        let reference = format!("{transport}{}", saved.display());
        run(Command::new("skopeo").args(["inspect", &reference])).unwrap();
    }
}

#[test]
fn a_blob_with_a_wrong_digest_is_refused_with_nothing_added() {
    let images = test_images();
    let copy = common::temp_dir();
    let layout = copy.path().join("oci");
    run(Command::new("cp").arg("-a").arg(&images.layout).arg(&layout)).unwrap();
    let layer = digest_in(text_between(&layout_manifest(&layout), "\"layers\"", "}"));
    let blob = layout.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let root = common::temp_dir();
    let transcript = ch06(root.path(), &["image", "load", text(&layout)]);
    assert_ne!(transcript.status, 0, "{transcript}");
    assert!(transcript.output.contains(&format!("blob {layer} is corrupt")), "{transcript}");
    assert_store_empty(root.path());
}

#[test]
fn a_manifest_naming_a_digest_that_is_a_path_is_refused() {
    let images = test_images();
    let copy = common::temp_dir();
    let layout = copy.path().join("oci");
    run(Command::new("cp").arg("-a").arg(&images.layout).arg(&layout)).unwrap();
    let manifest = layout_manifest(&layout);
    let layer = digest_in(text_between(&manifest, "\"layers\"", "}"));
    let hostile = manifest.replace(&layer, "sha256:../../../../etc/passwd");
    let (digest, size) = add_blob(&layout, hostile.as_bytes()).unwrap();
    let index = fs::read_to_string(layout.join("index.json")).unwrap();
    let old = (sha256_of_bytes(&manifest, copy.path()), manifest.len());
    let index = index
        .replace(&old.0, &digest)
        .replace(&format!("\"size\":{}", old.1), &format!("\"size\":{size}"));
    fs::write(layout.join("index.json"), index).unwrap();
    let root = common::temp_dir();
    let transcript = ch06(root.path(), &["image", "load", text(&layout)]);
    assert_ne!(transcript.status, 0, "{transcript}");
    assert!(transcript.output.contains("../../../../etc/passwd"), "{transcript}");
    assert_store_empty(root.path());
}

/// The digest of `text`, by way of a file in `dir`.
fn sha256_of_bytes(text: &str, dir: &Path) -> String {
    let path = dir.join("bytes");
    fs::write(&path, text).unwrap();
    sha256_of(&path)
}

/// A docker-archive of the image `name:latest` with one layer, the tar of `content`,
/// compressed with gzip when `gzip`; returns it and the layer's diff id.
fn docker_archive(dir: &Path, content: &Path, name: &str, gzip: bool) -> (PathBuf, String) {
    let layer = dir.join("layer.tar");
    run(Command::new("tar").arg("-cf").arg(&layer).arg("-C").arg(content).arg(".")).unwrap();
    let diff_id = sha256_of(&layer);
    if gzip {
        run(Command::new("gzip").arg("-n").arg(&layer)).unwrap();
        fs::rename(dir.join("layer.tar.gz"), &layer).unwrap();
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    fs::write(dir.join("config.json"), config).unwrap();
    let manifest = format!(
        r#"[{{"Config":"config.json","RepoTags":["{name}:latest"],"Layers":["layer.tar"]}}]"#
    );
    fs::write(dir.join("manifest.json"), manifest).unwrap();
    let archive = dir.join(format!("{name}.tar"));
    let members = ["manifest.json", "config.json", "layer.tar"];
    run(Command::new("tar").arg("-cf").arg(&archive).arg("-C").arg(dir).args(members)).unwrap();
    fs::remove_file(&layer).unwrap();
    (archive, diff_id)
}

/// A docker-archive with one layer of a file of `size` bytes, so that a load takes a while.
fn big_docker_archive(dir: &Path, size: u64) -> PathBuf {
    let content = dir.join("content");
    fs::create_dir(&content).unwrap();
    fs::File::create(content.join("big")).unwrap().set_len(size).unwrap();
    let (archive, _) = docker_archive(dir, &content, "big", false);
    fs::remove_dir_all(&content).unwrap();
    archive
}

#[test]
fn a_gzip_layer_is_stored_as_it_is_and_saved_to_a_docker_archive_uncompressed() {
    let dir = common::temp_dir();
    let (archive, diff_id) = docker_archive(dir.path(), &common::rootfs(), "zipped", true);
    let root = common::temp_dir();
    let loaded = ch06_ok(root.path(), &["image", "load", text(&archive)]);
    assert_eq!(loaded, "Loaded image: zipped:latest\n");
    let stored = format!("oci:{}/images:zipped:latest", root.path().display());
    let manifest = Command::new("skopeo").args(["inspect", "--raw", &stored]).output().unwrap();
    let manifest = String::from_utf8(manifest.stdout).unwrap();
    assert!(manifest.contains("application/vnd.oci.image.layer.v1.tar+gzip"), "{manifest}");
    let saved = dir.path().join("saved.tar");
    ch06_ok(root.path(), &["image", "save", "zipped", "-o", text(&saved)]);
    let out = dir.path().join("saved");
    fs::create_dir(&out).unwrap();
    run(Command::new("tar").arg("-xf").arg(&saved).arg("-C").arg(&out)).unwrap();
    let layer = out.join(format!("{}.tar", &diff_id[7..]));
    assert_eq!(sha256_of(&layer), diff_id, "the saved layer is the plain tar");
}

#[test]
fn a_load_killed_half_way_leaves_no_image_and_the_next_load_works() {
    let dir = common::temp_dir();
    let archive = big_docker_archive(dir.path(), 128 << 20);
    let root = common::temp_dir();
    let ingest = root.path().join("ingest");
    let mut load = common::command("ch06");
    load.arg("--root").arg(root.path()).args(["image", "load", text(&archive)]);
    let mut child = load.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    common::poll_until("the load to write a blob into ingest/", Duration::from_secs(60), || {
        let files = fs::read_dir(&ingest).into_iter().flatten().flatten();
        let writing = files.filter_map(|file| file.metadata().ok()).any(|meta| meta.len() > 0);
        assert!(child.try_wait().unwrap().is_none(), "the load ended before it could be killed");
        writing
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(listed(root.path()), vec![], "a killed load lists no image");
    assert_eq!(
        ch06_ok(root.path(), &["image", "load", text(&archive)]),
        "Loaded image: big:latest\n"
    );
    assert_eq!(listed(root.path()).len(), 1);
    assert_eq!(files_in(&ingest), Vec::<String>::new(), "the next load emptied ingest/");
}

#[test]
fn two_loads_of_one_image_at_once_both_succeed() {
    let images = test_images();
    let root = common::temp_dir();
    let load = || {
        let mut command = common::command("ch06");
        command.arg("--root").arg(root.path()).args([
            "image",
            "load",
            text(&images.docker_archive),
        ]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (first, second) = (load(), load());
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "a concurrent load failed: {said}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "Loaded image: busybox:latest\n");
    }
    assert_eq!(listed(root.path()), vec![busybox_row(&busybox_id(&images))]);
}

#[test]
fn rm_removes_the_blobs_and_layers_no_other_image_or_container_uses() {
    let images = test_images();
    let busybox = busybox_id(&images);
    let root = common::temp_dir();
    ch06_ok(root.path(), &["image", "load", text(&images.docker_archive)]);
    let rootfs_tar = common::temp_dir();
    let tar = rootfs_tar.path().join("rootfs.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(common::rootfs()).arg(".")).unwrap();
    let mine = ch06_ok(root.path(), &["image", "import", text(&tar), "mine:1"]).trim().to_string();
    ch06_ok(root.path(), &["image", "import", text(&tar), "mine:2"]);
    // Stand-ins for the layers the load and import unpacked: the directories rm must remove.
    let busybox_layer = root.path().join("layers").join(&docker_layer_diff_id(&images)[7..]);
    let mine_layer = root.path().join("layers").join(&sha256_of(&tar)[7..]);
    for layer in [&busybox_layer, &mine_layer] {
        fs::create_dir_all(layer.join("bin")).unwrap();
    }
    let blobs = root.path().join("images/blobs/sha256");
    assert_eq!(files_in(&blobs).len(), 6, "two images of a config, a manifest and a layer each");

    let removed = ch06_ok(root.path(), &["image", "rm", "busybox"]);
    assert_eq!(removed, format!("Untagged: busybox:latest\nDeleted: {busybox}\n"));
    assert_eq!(files_in(&blobs).len(), 3, "busybox's blobs went, mine's stayed");
    assert!(!busybox_layer.exists() && mine_layer.is_dir());

    assert_eq!(ch06_ok(root.path(), &["image", "rm", "mine:1"]), "Untagged: mine:1\n");
    let container = root.path().join("containers/crabbox-test");
    fs::create_dir_all(&container).unwrap();
    fs::write(container.join("container.json"), format!(r#"{{"image_id":"{mine}"}}"#)).unwrap();
    let refused = ch06(root.path(), &["image", "rm", "mine:2"]);
    assert_ne!(refused.status, 0, "{refused}");
    assert!(refused.output.contains("used by container crabbox-test"), "{refused}");
    assert!(mine_layer.is_dir(), "a layer a container uses stays");

    fs::remove_dir_all(&container).unwrap();
    let removed = ch06_ok(root.path(), &["image", "rm", &mine[..16]]);
    assert_eq!(removed, format!("Untagged: mine:2\nDeleted: {mine}\n"));
    assert_eq!(files_in(&blobs), Vec::<String>::new());
    assert_eq!(files_in(&root.path().join("layers")), Vec::<String>::new());
}

/// The diff id of the docker-archive's layer: skopeo names a layer tar by its digest.
fn docker_layer_diff_id(images: &TestImages) -> String {
    let mut tar = Command::new("tar");
    let output = tar.arg("-xOf").arg(&images.docker_archive).arg("manifest.json").output();
    let manifest = String::from_utf8(output.unwrap().stdout).unwrap();
    format!("sha256:{}", text_between(&manifest, "\"Layers\":[\"", ".tar\""))
}

/// This host's architecture as an image names it (Go's GOARCH).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn an_index_of_several_platforms_loads_the_image_of_this_host() {
    let images = test_images();
    let copy = common::temp_dir();
    let layout = copy.path().join("oci");
    run(Command::new("cp").arg("-a").arg(&images.skopeo_layout).arg(&layout)).unwrap();
    let index = fs::read_to_string(layout.join("index.json")).unwrap();
    let manifest = digest_in(&index);
    let size = text_between(&index, "\"size\":", ",");
    let other = if go_arch() == "s390x" { "riscv64" } else { "s390x" };
    let platforms = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{zeros}","size":1,"platform":{{"architecture":"{other}","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#,
        zeros = "0".repeat(64),
        arch = go_arch(),
    );
    let (digest, size) = add_blob(&layout, platforms.as_bytes()).unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{digest}","size":{size},"annotations":{{"org.opencontainers.image.ref.name":"busybox:multi"}}}}]}}"#
    );
    fs::write(layout.join("index.json"), index).unwrap();
    let root = common::temp_dir();
    assert_eq!(
        ch06_ok(root.path(), &["image", "load", text(&layout)]),
        "Loaded image: busybox:multi\n"
    );
    let id = busybox_id(&images);
    assert_eq!(
        listed(root.path()),
        vec![("busybox".into(), "multi".into(), id[7..19].to_string())]
    );
}

#[test]
fn a_docker_archive_naming_files_outside_itself_is_refused() {
    let dir = common::temp_dir();
    let (archive, diff_id) = docker_archive(dir.path(), &common::rootfs(), "outside", false);
    let members = common::temp_dir();
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(members.path())).unwrap();
    let manifest = r#"[{"Config":"config.json","RepoTags":["outside:latest"],"Layers":["../../../etc/passwd"]}]"#;
    fs::write(members.path().join("manifest.json"), manifest).unwrap();
    let by_name = dir.path().join("by-name.tar");
    let files = ["manifest.json", "config.json"];
    run(Command::new("tar").arg("-cf").arg(&by_name).arg("-C").arg(members.path()).args(files))
        .unwrap();
    // A layer that is a symlink out of the archive, where docker save links a shared layer.
    let manifest = manifest.replace("../../../etc/passwd", &format!("{}/layer.tar", &diff_id[7..]));
    fs::write(members.path().join("manifest.json"), manifest).unwrap();
    fs::create_dir(members.path().join(&diff_id[7..])).unwrap();
    let link = members.path().join(&diff_id[7..]).join("layer.tar");
    std::os::unix::fs::symlink("../../../etc/passwd", link).unwrap();
    let by_link = dir.path().join("by-link.tar");
    let files = ["manifest.json", "config.json", &diff_id[7..]];
    run(Command::new("tar").arg("-cf").arg(&by_link).arg("-C").arg(members.path()).args(files))
        .unwrap();
    for (archive, refusal) in
        [(by_name, "leaves the archive"), (by_link, "points out of the archive")]
    {
        let root = common::temp_dir();
        let transcript = ch06(root.path(), &["image", "load", text(&archive)]);
        assert_ne!(transcript.status, 0, "{transcript}");
        assert!(transcript.output.contains(refusal), "{transcript}");
        assert_store_empty(root.path());
    }
}

#[test]
fn a_rootfs_tar_imports_to_one_id_whether_compressed_or_not() {
    let dir = common::temp_dir();
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(common::rootfs()).arg(".")).unwrap();
    run(Command::new("gzip").arg("-k").arg("-n").arg(&tar)).unwrap();
    let root = common::temp_dir();
    let plain = ch06_ok(root.path(), &["image", "import", text(&tar), "plain"]);
    let gzip = dir.path().join("rootfs.tar.gz");
    let zipped = ch06_ok(root.path(), &["image", "import", text(&gzip), "zipped:1"]);
    assert_eq!(plain, zipped, "the config names the layer by its diff id, the plain tar's digest");
    let id = plain.trim();
    let rows = listed(root.path());
    assert_eq!(rows.iter().map(|row| row.2.as_str()).collect::<Vec<_>>(), [&id[7..19]; 2]);
    let config = ch06_ok(root.path(), &["image", "inspect", "zipped:1"]);
    assert!(config.contains(&sha256_of(&tar)), "{config}");
    assert!(!config.contains("\"Cmd\""), "docker import gives no command: {config}");
    let stored = format!("oci:{}/images:zipped:1", root.path().display());
    let manifest = Command::new("skopeo").args(["inspect", "--raw", &stored]).output().unwrap();
    let manifest = String::from_utf8(manifest.stdout).unwrap();
    assert!(manifest.contains("application/vnd.oci.image.layer.v1.tar+gzip"), "{manifest}");
}
