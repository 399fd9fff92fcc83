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

/// Makes every image in `dir`.
fn build_images(dir: &Path, rootfs: &Path) -> Result<()> {
    let maker = Maker {
        dir: dir.to_path_buf(),
        bundles: tempfile::Builder::new().prefix("crabbox-images-").tempdir()?,
    };
    build_busybox(&maker, rootfs)?;
    build_layered(&maker)?;
    build_configured(&maker, rootfs)
}

/// busybox-oci/ with the rootfs as its one layer, and the two archives of it.
fn build_busybox(maker: &Maker, rootfs: &Path) -> Result<()> {
    let image = "busybox-oci:busybox:latest";
    maker.tool("umoci", &["init", "--layout", "busybox-oci"])?;
    maker.tool("umoci", &["new", "--image", image])?;
    let bundle = maker.unpack(image, "busybox")?;
    run(Command::new("cp").arg("-a").arg(rootfs.join(".")).arg(bundle.join("rootfs")))?;
    maker.tool("umoci", &["repack", "--image", image, &bundle.display().to_string()])?;
    maker.tool("umoci", &["config", "--image", image, "--config.cmd", "sh"])?;
    // Each repack and config writes a new manifest and config; gc drops the old ones.
    maker.tool("umoci", &["gc", "--layout", "busybox-oci"])?;
    for archive in ["docker-archive:busybox.docker.tar", "oci-archive:busybox.oci.tar"] {
        let target = format!("{archive}:{BUSYBOX}");
        maker.tool("skopeo", &["copy", "--quiet", &format!("oci:{image}"), &target])?;
    }
    Ok(())
}

/// layered/: busybox's layer as it is, a layer that umoci repack makes of the files added
/// to it, and one with a whiteout and an opaque directory.
fn build_layered(maker: &Maker) -> Result<()> {
    let image = maker.copy_of_busybox("layered", LAYERED)?;
    let bundle = maker.unpack(&image, "layered")?;
    let data = bundle.join("rootfs/data");
    fs::create_dir_all(data.join("dir"))?;
    for (file, contents) in
        [("added", "added\n"), ("doomed", "doomed\n"), ("dir/a", "a\n"), ("dir/b", "b\n")]
    {
        fs::write(data.join(file), contents)?;
    }
    maker.tool("umoci", &["repack", "--image", &image, &bundle.display().to_string()])?;
    // umoci repack writes a whiteout for each file of a directory that was removed and made
    // again (`dir/.wh.a`, `dir/.wh.b`), never the opaque marker: this layer is written by
    // hand, as image-spec's layer.md describes whiteouts.
    let tree = maker.bundles.path().join("second-layer");
    fs::create_dir_all(tree.join("data/dir"))?;
    for (file, contents) in [(".wh.doomed", ""), ("dir/.wh..wh..opq", ""), ("dir/c", "c\n")] {
        fs::write(tree.join("data").join(file), contents)?;
    }
    let entries = ["data", "data/.wh.doomed", "data/dir", "data/dir/.wh..wh..opq", "data/dir/c"];
    maker.add_tar_layer(&image, &tree, &entries.map(|entry| (entry, 0)))?;
    maker.tool("umoci", &["gc", "--layout", "layered"])
}

/// configured/: busybox with a user of its own, in a layer written by hand because its
/// home belongs to that user (umoci repack, run by someone other than root, cannot say so),
/// and a config that names the user, an entrypoint, a command, a folder and a variable.
fn build_configured(maker: &Maker, rootfs: &Path) -> Result<()> {
    let image = maker.copy_of_busybox("configured", CONFIGURED)?;
    let tree = maker.bundles.path().join("user-layer");
    fs::create_dir_all(tree.join("etc"))?;
    fs::create_dir_all(tree.join("home/crab"))?;
    for (file, line) in [
        ("passwd", format!("crab:x:{CRAB_ID}:{CRAB_ID}:crab:/home/crab:/bin/sh\n")),
        ("group", format!("crab:x:{CRAB_ID}:\n")),
    ] {
        let base = fs::read_to_string(rootfs.join("etc").join(file))?;
        fs::write(tree.join("etc").join(file), base + &line)?;
    }
    let entries =
        [("etc", 0), ("etc/group", 0), ("etc/passwd", 0), ("home", 0), ("home/crab", CRAB_ID)];
    maker.add_tar_layer(&image, &tree, &entries)?;
    let config = [
        ["--config.entrypoint", "/bin/echo"],
        ["--config.entrypoint", "entry"],
        ["--config.cmd", "default"],
        ["--config.user", "crab"],
        ["--config.workingdir", "/home/crab"],
        ["--config.env", "GREETING=hello"],
    ];
    maker.tool("umoci", &[&["config", "--image", &image][..], &config.concat()].concat())?;
    maker.tool("umoci", &["gc", "--layout", "configured"])
}

/// Where the images are made: the tools' working directory (so the commands they echo
/// show short paths), and a temporary folder for the bundles umoci unpacks.
struct Maker {
    dir: PathBuf,
    bundles: tempfile::TempDir,
}

impl Maker {
    /// Runs `program args` in the images' folder, echoed.
    fn tool(&self, program: &str, args: &[&str]) -> Result<()> {
        run(Command::new(program).args(args).current_dir(&self.dir))
    }

    /// Copies busybox into a new layout `layout` as `reference` (blobs and digests as they
    /// are), and returns umoci's name for that image, `layout:reference`.
    fn copy_of_busybox(&self, layout: &str, reference: &str) -> Result<String> {
        let target = format!("oci:{layout}:{reference}");
        self.tool("skopeo", &["copy", "--quiet", &format!("oci:busybox-oci:{BUSYBOX}"), &target])?;
        Ok(format!("{layout}:{reference}"))
    }

    /// `umoci unpack` of `image` into a new bundle `name`, returned; `--rootless` when we
    /// are not root, so that umoci records as root's the files the user owns.
    fn unpack(&self, image: &str, name: &str) -> Result<PathBuf> {
        let bundle = self.bundles.path().join(name);
        let mut command = Command::new("umoci");
        command.arg("unpack").current_dir(&self.dir);
        if !is_root() {
            command.arg("--rootless");
        }
        run(command.args(["--image", image]).arg(&bundle))?;
        Ok(bundle)
    }

    /// Appends to `image` a layer that GNU tar writes from `entries` of `tree`, in that
    /// order, each `(path, owner)` owned by uid and gid `owner`; `umoci raw add-layer`
    /// compresses it and records its diff id.
    fn add_tar_layer(&self, image: &str, tree: &Path, entries: &[(&str, u32)]) -> Result<()> {
        let layer = tree.with_extension("tar");
        for (i, same_owner) in entries.chunk_by(|a, b| a.1 == b.1).enumerate() {
            let owner = same_owner[0].1;
            let mut tar = Command::new("tar");
            tar.arg(if i == 0 { "--create" } else { "--append" })
                .arg("--file")
                .arg(&layer)
                .arg("--directory")
                .arg(tree)
                .args(["--no-recursion", "--numeric-owner"])
                .arg(format!("--owner={owner}"))
                .arg(format!("--group={owner}"))
                .args(same_owner.iter().map(|(path, _)| path));
            run(&mut tar)?;
        }
        let mut add = Command::new("umoci");
        add.args(["raw", "add-layer", "--image", image]).arg(&layer).current_dir(&self.dir);
        run(&mut add)
    }
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
