//! The images chapter 6's checks load, made from the busybox rootfs by the tools a user
//! has: umoci writes OCI image layouts, skopeo turns one into a docker-archive (what
//! `docker save` writes) and an oci-archive. They live in `.crabbox/images/` and are made
//! again when the rootfs they come from changes (see [`stamp_of`]).
//!
//! - `busybox-oci/`: `busybox:latest`, one layer (the rootfs), `Cmd ["sh"]`;
//! - `busybox.docker.tar` and `busybox.oci.tar`: the same image, as archives;
//! - `layered/`: `layered:latest`, busybox and two layers: the first adds `/data/added`,
//!   `/data/doomed` and `/data/dir/{a,b}`; the second deletes `/data/doomed` (a whiteout,
//!   `.wh.doomed`) and replaces `/data/dir` by one holding only `c` (an opaque directory,
//!   `.wh..wh..opq`);
//! - `configured/`: `configured:latest`, busybox with a user `crab` (1234:1234, home
//!   `/home/crab`), `Entrypoint ["/bin/echo","entry"]`, `Cmd ["default"]`, `User "crab"`,
//!   `WorkingDir "/home/crab"` and `Env GREETING=hello`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::host_tools::ensure_tools;
use crate::process::{is_root, run};
use crate::rootfs::ensure_default_rootfs;
use crate::{build_in_place, project_root};

/// The reference of the busybox image in each of its forms.
pub const BUSYBOX: &str = "busybox:latest";
/// The reference of the image with a whiteout and an opaque directory.
pub const LAYERED: &str = "layered:latest";
/// The reference of the image with an entrypoint, a user and a working directory.
pub const CONFIGURED: &str = "configured:latest";

/// Bumped when the recipe below changes, so images made by an older one are made again.
const RECIPE: u32 = 1;

/// The uid and gid of the user `crab` in the configured image.
const CRAB_ID: u32 = 1234;

/// The folder of the test images: where the checks find them.
#[derive(Debug, Clone)]
pub struct TestImages {
    pub dir: PathBuf,
}

impl TestImages {
    /// The OCI layout umoci made, holding [`BUSYBOX`].
    pub fn busybox_layout(&self) -> PathBuf {
        self.dir.join("busybox-oci")
    }

    /// [`BUSYBOX`] as a docker-archive (skopeo's, from the layout).
    pub fn busybox_docker_archive(&self) -> PathBuf {
        self.dir.join("busybox.docker.tar")
    }

    /// [`BUSYBOX`] as an oci-archive (skopeo's, from the layout).
    pub fn busybox_oci_archive(&self) -> PathBuf {
        self.dir.join("busybox.oci.tar")
    }

    /// The OCI layout holding [`LAYERED`].
    pub fn layered_layout(&self) -> PathBuf {
        self.dir.join("layered")
    }

    /// The OCI layout holding [`CONFIGURED`].
    pub fn configured_layout(&self) -> PathBuf {
        self.dir.join("configured")
    }
}

/// Where the test images live: a gitignored folder of the project.
pub fn test_images_dir() -> PathBuf {
    project_root().join(".crabbox/images")
}

/// Returns the test images, making them first when they are missing or were made from
/// another rootfs (whole or not at all: see [`build_in_place`]).
pub fn ensure_test_images() -> Result<TestImages> {
    let rootfs = ensure_default_rootfs()?;
    let images = TestImages { dir: test_images_dir() };
    let stamp = stamp_of(&rootfs)?;
    let stamp_path = images.dir.join("stamp");
    if images.dir.is_dir() && fs::read_to_string(&stamp_path).ok().as_deref() != Some(&stamp) {
        remove_stale(&images.dir)?;
    }
    build_in_place(&images.dir, |staging| {
        ensure_tools([("umoci", "umoci"), ("skopeo", "skopeo"), ("tar", "tar")])?;
        fs::create_dir_all(staging)?;
        build_images(staging, &rootfs)?;
        fs::write(staging.join("stamp"), &stamp).context("write the images' stamp")
    })?;
    Ok(images)
}

/// Moves stale images aside before removing them, so no other process finds half of them.
fn remove_stale(dir: &Path) -> Result<()> {
    let aside = dir.with_file_name(format!("images.stale-{}", std::process::id()));
    fs::rename(dir, &aside).with_context(|| format!("move {} aside", dir.display()))?;
    fs::remove_dir_all(&aside).with_context(|| format!("remove {}", aside.display()))
}

/// What the images depend on: the recipe, and every file of the rootfs with its mode, size
/// and modification time (a rebuilt rootfs has new ones).
fn stamp_of(rootfs: &Path) -> Result<String> {
    let mut stamp = format!("recipe {RECIPE}\n");
    let mut dirs = vec![rootfs.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .with_context(|| format!("read {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let meta = entry.path().symlink_metadata()?;
            let path = entry.path();
            let relative = path.strip_prefix(rootfs)?.display().to_string();
            stamp.push_str(&format!(
                "{relative} {:o} {} {}.{}\n",
                meta.mode(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
            if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok(stamp)
}

/// Makes every image in `dir` (the working directory of each tool, so the commands echo
/// short paths).
fn build_images(dir: &Path, rootfs: &Path) -> Result<()> {
    let bundles = tempfile::Builder::new().prefix("crabbox-images-").tempdir()?;
    let tool = |program: &str, args: &[&str]| {
        let mut command = Command::new(program);
        command.args(args).current_dir(dir);
        run(&mut command)
    };
    let bundle = |name: &str| bundles.path().join(name).display().to_string();

    tool("umoci", &["init", "--layout", "busybox-oci"])?;
    tool("umoci", &["new", "--image", "busybox-oci:busybox:latest"])?;
    unpack(dir, "busybox-oci:busybox:latest", &bundle("busybox"))?;
    let bundle_rootfs = Path::new(&bundle("busybox")).join("rootfs");
    run(Command::new("cp").arg("-a").arg(rootfs.join(".")).arg(bundle_rootfs))?;
    tool("umoci", &["repack", "--image", "busybox-oci:busybox:latest", &bundle("busybox")])?;
    tool("umoci", &["config", "--image", "busybox-oci:busybox:latest", "--config.cmd", "sh"])?;
    // Each repack and config writes a new manifest and config; gc drops the old ones.
    tool("umoci", &["gc", "--layout", "busybox-oci"])?;
    for archive in ["docker-archive:busybox.docker.tar", "oci-archive:busybox.oci.tar"] {
        let target = format!("{archive}:busybox:latest");
        tool("skopeo", &["copy", "--quiet", "oci:busybox-oci:busybox:latest", &target])?;
    }

    // The layered image: busybox's layer as it is, and two more on top.
    tool(
        "skopeo",
        &["copy", "--quiet", "oci:busybox-oci:busybox:latest", "oci:layered:layered:latest"],
    )?;
    let layered = bundle("layered");
    unpack(dir, "layered:layered:latest", &layered)?;
    let data = Path::new(&layered).join("rootfs/data");
    fs::create_dir_all(data.join("dir"))?;
    for (file, contents) in
        [("added", "added\n"), ("doomed", "doomed\n"), ("dir/a", "a\n"), ("dir/b", "b\n")]
    {
        fs::write(data.join(file), contents)?;
    }
    tool("umoci", &["repack", "--image", "layered:layered:latest", &layered])?;
    // umoci repack writes a whiteout for each file of a directory that was removed and made
    // again (`dir/.wh.a`, `dir/.wh.b`), never the opaque marker: this layer is written by
    // hand, as image-spec's layer.md describes whiteouts.
    let second = bundles.path().join("second-layer");
    fs::create_dir_all(second.join("data/dir"))?;
    for (file, contents) in [(".wh.doomed", ""), ("dir/.wh..wh..opq", ""), ("dir/c", "c\n")] {
        fs::write(second.join("data").join(file), contents)?;
    }
    let entries = ["data", "data/.wh.doomed", "data/dir", "data/dir/.wh..wh..opq", "data/dir/c"];
    add_tar_layer(dir, "layered:layered:latest", &second, &entries.map(|e| (e, 0)))?;
    tool("umoci", &["gc", "--layout", "layered"])?;

    // The configured image: a user of its own, in a layer written by hand because its home
    // belongs to that user (umoci repack, run by someone other than root, cannot say so).
    tool(
        "skopeo",
        &["copy", "--quiet", "oci:busybox-oci:busybox:latest", "oci:configured:configured:latest"],
    )?;
    let user = bundles.path().join("user-layer");
    fs::create_dir_all(user.join("etc"))?;
    fs::create_dir_all(user.join("home/crab"))?;
    for (file, line) in [
        ("passwd", format!("crab:x:{CRAB_ID}:{CRAB_ID}:crab:/home/crab:/bin/sh\n")),
        ("group", format!("crab:x:{CRAB_ID}:\n")),
    ] {
        let base = fs::read_to_string(rootfs.join("etc").join(file))?;
        fs::write(user.join("etc").join(file), base + &line)?;
    }
    let entries =
        [("etc", 0), ("etc/group", 0), ("etc/passwd", 0), ("home", 0), ("home/crab", CRAB_ID)];
    add_tar_layer(dir, "configured:configured:latest", &user, &entries)?;
    let image = ["--image", "configured:configured:latest"];
    let config = [
        "--config.entrypoint",
        "/bin/echo",
        "--config.entrypoint",
        "entry",
        "--config.cmd",
        "default",
        "--config.user",
        "crab",
        "--config.workingdir",
        "/home/crab",
        "--config.env",
        "GREETING=hello",
    ];
    tool("umoci", &[&["config"], &image[..], &config[..]].concat())?;
    tool("umoci", &["gc", "--layout", "configured"])
}

/// `umoci unpack` of `image` into the bundle `bundle`; `--rootless` when we are not root,
/// so umoci records files as root's that the user's uid owns.
fn unpack(dir: &Path, image: &str, bundle: &str) -> Result<()> {
    let mut command = Command::new("umoci");
    command.arg("unpack").current_dir(dir);
    if !is_root() {
        command.arg("--rootless");
    }
    run(command.args(["--image", image, bundle]))
}

/// Appends to `image` a layer that GNU tar writes from `entries` of `tree`, in that order,
/// each `(path, owner)` owned by uid and gid `owner`; `umoci raw add-layer` compresses it and
/// records its diff id.
fn add_tar_layer(dir: &Path, image: &str, tree: &Path, entries: &[(&str, u32)]) -> Result<()> {
    let layer = tree.with_extension("tar");
    for (i, run_of_owner) in entries.chunk_by(|a, b| a.1 == b.1).enumerate() {
        let owner = run_of_owner[0].1;
        let mut tar = Command::new("tar");
        tar.arg(if i == 0 { "--create" } else { "--append" })
            .arg("--file")
            .arg(&layer)
            .arg("--directory")
            .arg(tree)
            .args(["--no-recursion", "--numeric-owner"])
            .arg(format!("--owner={owner}"))
            .arg(format!("--group={owner}"))
            .args(run_of_owner.iter().map(|(path, _)| path));
        run(&mut tar)?;
    }
    let mut add = Command::new("umoci");
    add.args(["raw", "add-layer", "--image", image]).arg(&layer).current_dir(dir);
    run(&mut add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_changes_with_any_file_of_the_rootfs() {
        let rootfs = tempfile::tempdir().unwrap();
        fs::create_dir(rootfs.path().join("etc")).unwrap();
        fs::write(rootfs.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let before = stamp_of(rootfs.path()).unwrap();
        assert_eq!(stamp_of(rootfs.path()).unwrap(), before, "the same rootfs, the same stamp");
        fs::write(rootfs.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        assert_ne!(stamp_of(rootfs.path()).unwrap(), before, "a file below the top changed");
    }
}
