//! Chapter 6 checks: containers made from images. Each check has a store of its own (`ch06
//! --root` in a temporary directory) and loads the images it needs, made from the busybox
//! rootfs by umoci and skopeo (`cargo xtask rootfs`). After every run nothing of the
//! container is left on the host but what `ps -a` lists: no mount, no cgroup.

mod common;
// Hostile layers, and the store and its formats, are modules of their own (a crate root finds its modules
// beside it, hence the path).
#[path = "ch06_layers/hostile.rs"]
mod hostile;
#[path = "ch06_layers/images.rs"]
mod images;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Running, Transcript};
use insta::assert_snapshot;
use tempfile::TempDir;

/// A store of the check's own, removed with it.
struct TestStore {
    dir: TempDir,
}

impl TestStore {
    /// An empty store.
    fn new() -> TestStore {
        TestStore { dir: common::temp_dir() }
    }

    /// A store with these image layouts or archives loaded.
    fn with(images: &[PathBuf]) -> TestStore {
        let store = TestStore::new();
        for image in images {
            let loaded = Transcript::run(store.ch06(&["image", "load"]).arg(image));
            assert_eq!(loaded.status, 0, "{loaded}");
        }
        store
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `ch06 --root STORE ARGS…`.
    fn ch06(&self, args: &[&str]) -> Command {
        let mut ch06 = common::command("ch06");
        ch06.arg("--root").arg(self.root()).args(args);
        ch06
    }

    /// `ch06 --root STORE run --net none OPTIONS… IMAGE COMMAND…`.
    fn run(&self, options: &[&str], image_and_command: &[&str]) -> Command {
        let mut ch06 = self.ch06(&["run", "--net", "none"]);
        ch06.args(options).args(image_and_command);
        ch06
    }

    /// The ids of the containers the store holds.
    fn containers(&self) -> Vec<String> {
        let dir = self.root().join("containers");
        let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
        entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect()
    }

    /// Mounts of the host's mount table below the store.
    fn mounts(&self) -> Vec<String> {
        let root = self.root().to_string_lossy().into_owned();
        common::host_mounts()
            .lines()
            .filter(|line| line.contains(&root))
            .map(String::from)
            .collect()
    }
}

fn busybox_store() -> TestStore {
    TestStore::with(&[common::test_images().busybox_layout()])
}

fn configured_store() -> TestStore {
    TestStore::with(&[
        common::test_images().busybox_layout(),
        common::test_images().configured_layout(),
    ])
}

#[test]
fn a_container_runs_a_command_of_the_image() {
    let _s = common::settings().bind_to_scope();
    let store = busybox_store();
    let transcript =
        Transcript::run(&mut store.run(&["--rm"], &["busybox", "cat", "/etc/os-release"]));
    assert_eq!(transcript.status, 0, "{transcript}");
    assert!(transcript.command_output().contains("crabbox"), "{transcript}");
    assert_snapshot!("run_image", transcript);
}

#[test]
fn the_image_config_gives_the_command_user_directory_and_environment() {
    let _s = common::settings().bind_to_scope();
    let store = configured_store();
    let default = Transcript::run(&mut store.run(&["--rm"], &["configured"]));
    assert_eq!(default.command_output(), "entry default\n", "{default}");
    let script = "id; pwd; echo $GREETING $HOME";
    let inside = Transcript::run(
        &mut store.run(&["--rm", "--entrypoint", "sh"], &["configured", "-c", script]),
    );
    assert_eq!(
        inside.command_output(),
        "uid=1234(crab) gid=1234(crab) groups=1234(crab)\n/home/crab\nhello /home/crab\n",
        "{inside}"
    );
    assert_snapshot!("image_config", format!("{default}{inside}"));
}

#[test]
fn command_replaces_cmd_and_the_flags_replace_user_and_directory() {
    let store = configured_store();
    let mine = Transcript::run(&mut store.run(&["--rm"], &["configured", "mine"]));
    assert_eq!(mine.command_output(), "entry mine\n", "{mine}");
    let options =
        ["--rm", "--entrypoint", "sh", "-u", "0:0", "-w", "/tmp/new", "-e", "GREETING=hi"];
    let flags = Transcript::run(
        &mut store.run(&options, &["configured", "-c", "id -u; pwd; echo $GREETING"]),
    );
    assert_eq!(flags.command_output(), "0\n/tmp/new\nhi\n", "{flags}");
    let entrypoint =
        Transcript::run(&mut store.run(&["--rm", "--entrypoint", "echo"], &["configured"]));
    assert_eq!(
        entrypoint.command_output(),
        "\n",
        "--entrypoint drops the image's Cmd: {entrypoint}"
    );
}

#[test]
fn a_user_the_image_does_not_know_is_refused_and_leaves_nothing() {
    let _s = common::settings().bind_to_scope();
    let store = configured_store();
    let transcript = Transcript::run(&mut store.run(&["-u", "stranger"], &["configured"]));
    assert_eq!(transcript.status, 125, "{transcript}");
    assert!(transcript.output.contains("unable to find user stranger"), "{transcript}");
    assert_eq!(store.containers(), Vec::<String>::new());
    assert_eq!(store.mounts(), Vec::<String>::new());
    assert_snapshot!("unknown_user", transcript);
}

#[test]
fn a_write_is_seen_neither_by_another_container_nor_in_the_image() {
    let store = busybox_store();
    let write = "echo changed >> /etc/passwd; rm /etc/group; echo new > /etc/added";
    let first = Transcript::run(&mut store.run(&[], &["busybox", "sh", "-c", write]));
    assert_eq!(first.status, 0, "{first}");
    let look = "grep -c changed /etc/passwd; ls /etc/group /etc/added 2>&1 | wc -l";
    let second = Transcript::run(&mut store.run(&[], &["busybox", "sh", "-c", look]));
    assert_eq!(second.command_output(), "0\n2\n", "the other container saw the write: {second}");
    let [one, two] = records(&store);
    assert_eq!(one["lowers"], two["lowers"], "the two containers share the image's layers");
    let layer = PathBuf::from(one["lowers"][0].as_str().unwrap());
    let image_passwd = fs::read_to_string(layer.join("etc/passwd")).unwrap();
    assert!(!image_passwd.contains("changed"), "the write reached the image's layer");
    assert!(layer.join("etc/group").exists(), "the delete reached the image's layer");
}

/// The `container.json` of each container of the store, oldest first.
fn records<const N: usize>(store: &TestStore) -> [serde_json::Value; N] {
    let mut records: Vec<serde_json::Value> = store
        .containers()
        .iter()
        .map(|id| {
            let path = store.root().join("containers").join(id).join("container.json");
            serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
        })
        .collect();
    records.sort_by_key(|record| record["created"].as_u64());
    records.try_into().unwrap_or_else(|records: Vec<_>| panic!("{} containers", records.len()))
}

#[test]
fn the_first_write_copies_a_file_up_into_the_container_layer() {
    let store = busybox_store();
    let transcript =
        Transcript::run(&mut store.run(&[], &["busybox", "sh", "-c", "echo more >> /etc/passwd"]));
    assert_eq!(transcript.status, 0, "{transcript}");
    let [record] = records(&store);
    let lower = PathBuf::from(record["lowers"][0].as_str().unwrap()).join("etc/passwd");
    let upper = store
        .root()
        .join("containers")
        .join(record["id"].as_str().unwrap())
        .join("upper/etc/passwd");
    let (lower, upper) = (fs::metadata(lower).unwrap(), fs::metadata(upper).unwrap());
    assert_ne!(lower.ino(), upper.ino(), "the container's copy is a file of its own");
    assert_eq!(upper.len(), lower.len() + "more\n".len() as u64);
}

#[test]
fn ps_lists_stopped_containers_and_rm_removes_them() {
    let _s = common::settings().bind_to_scope();
    let store = busybox_store();
    let run = Transcript::run(&mut store.run(&[], &["busybox", "true"]));
    assert_eq!(run.status, 0, "{run}");
    let ps = Transcript::run(&mut store.ch06(&["ps", "-a"]));
    assert!(ps.output.contains("Exited (0)"), "{ps}");
    let running = Transcript::run(&mut store.ch06(&["ps"]));
    assert_eq!(running.output.lines().count(), 1, "only the header: {running}");
    let id = common::announced_id(&run.output);
    let rm = Transcript::run(&mut store.ch06(&["rm", &id]));
    assert_eq!(rm.status, 0, "{rm}");
    assert_eq!(store.containers(), Vec::<String>::new());
    let mut settings = common::settings();
    settings.add_filter(r"\d+ seconds ago", "[N] seconds ago");
    settings.bind(|| assert_snapshot!("ps_and_rm", format!("{ps}{rm}")));
}

#[test]
fn rm_at_exit_leaves_no_layer_mount_or_cgroup() {
    let store = busybox_store();
    let transcript = Transcript::run(&mut store.run(&["--rm"], &["busybox", "true"]));
    assert_eq!(transcript.status, 0, "{transcript}");
    let id = common::announced_id(&transcript.output);
    assert_eq!(store.containers(), Vec::<String>::new());
    assert_eq!(store.mounts(), Vec::<String>::new());
    assert_eq!(common::cgroup_dirs_named(&id), Vec::<PathBuf>::new());
}

#[test]
fn a_killed_runtime_leaves_nothing_after_cleanup() {
    let store = busybox_store();
    let mut running =
        Running::spawn(&mut store.run(&["--rm"], &["busybox", "sh", "-c", "echo ready; cat"]));
    running.wait_for_line("ready");
    let container = running.container_pid();
    running.signal(nix::sys::signal::Signal::SIGKILL);
    running.wait_for_exit();
    common::wait_until_gone("the container to die with its runtime", container);
    assert_eq!(
        store.mounts(),
        Vec::<String>::new(),
        "the overlay lived in the runtime's namespace"
    );
    let cleanup = Transcript::run(&mut store.ch06(&["cleanup"]));
    assert_eq!(cleanup.status, 0, "{cleanup}");
    assert_eq!(store.containers(), Vec::<String>::new());
}

#[test]
fn print_spec_shows_the_config_json_of_the_container() {
    let _s = common::settings().bind_to_scope();
    let store = configured_store();
    let options = ["--print-spec", "--memory", "64m", "-v", "/tmp:/data:ro"];
    let transcript = Transcript::run(&mut store.run(&options, &["configured", "hello"]));
    assert_eq!(transcript.status, 0, "{transcript}");
    let spec: serde_json::Value = serde_json::from_str(&transcript.command_output()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["/bin/echo", "entry", "hello"]));
    assert_eq!(spec["process"]["user"]["uid"], 1234);
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(store.containers(), Vec::<String>::new(), "--print-spec runs nothing");
    assert_snapshot!("print_spec", transcript);
}

#[test]
fn a_plain_directory_still_runs_with_rootfs() {
    let store = TestStore::new();
    let rootfs = common::rootfs();
    let transcript = Transcript::run(
        &mut store.run(&["--rm", "--rootfs"], &[rootfs.to_str().unwrap(), "hostname", "-s"]),
    );
    assert_eq!(transcript.status, 0, "{transcript}");
}

/// A rootfs whose `evil` is a symlink to a directory of the host (in the check's temp
/// directory), and a volume whose target goes through it.
struct EvilRootfs {
    rootfs: common::RootfsCopy,
    host: TempDir,
    source: TempDir,
}

impl EvilRootfs {
    fn new() -> EvilRootfs {
        let rootfs = common::rootfs_copy();
        let host = common::temp_dir();
        symlink(host.path(), rootfs.path.join("evil")).unwrap();
        EvilRootfs { rootfs, host, source: common::temp_dir() }
    }

    fn volume(&self) -> String {
        format!("{}:/evil/sub", self.source.path().display())
    }
}

#[test]
fn a_volume_target_through_a_symlink_is_made_inside_the_rootfs_not_on_the_host() {
    let evil = EvilRootfs::new();
    let mut ch05 = common::command("ch05");
    ch05.args(["run", "--net", "none", "-v", &evil.volume()])
        .arg(&evil.rootfs.path)
        .args(["--", "true"]);
    let before = Transcript::run(&mut ch05);
    assert!(evil.host.path().join("sub").exists(), "chapter 5 follows the symlink: {before}");
    fs::remove_dir(evil.host.path().join("sub")).unwrap();

    let store = TestStore::new();
    let rootfs = evil.rootfs.path.to_str().unwrap();
    let after = Transcript::run(
        &mut store.run(&["--rm", "-v", &evil.volume(), "--rootfs"], &[rootfs, "true"]),
    );
    assert_eq!(after.status, 0, "{after}");
    assert!(
        !evil.host.path().join("sub").exists(),
        "chapter 6 created the mount point on the host"
    );
    let inside = evil.rootfs.path.join(evil.host.path().strip_prefix("/").unwrap()).join("sub");
    assert!(inside.is_dir(), "the mount point is made inside the rootfs");
}

#[test]
fn etc_hosts_through_a_symlink_is_made_inside_the_rootfs_not_on_the_host() {
    let evil = EvilRootfs::new();
    let hosts = evil.rootfs.path.join("etc/hosts");
    let _ = fs::remove_file(&hosts);
    symlink(evil.host.path().join("file"), &hosts).unwrap();
    let mut ch05 = common::command("ch05");
    ch05.arg("run").arg(&evil.rootfs.path).args(["--", "true"]);
    let before = Transcript::run(&mut ch05);
    assert!(evil.host.path().join("file").exists(), "chapter 5 follows the symlink: {before}");
    fs::remove_file(evil.host.path().join("file")).unwrap();

    let store = TestStore::new();
    let mut ch06 = store.ch06(&["run", "--rm", "--rootfs"]);
    ch06.arg(&evil.rootfs.path).args(["cat", "/etc/hosts"]);
    let after = Transcript::run(&mut ch06);
    assert_eq!(after.status, 0, "{after}");
    assert!(after.command_output().contains("localhost"), "{after}");
    assert!(!evil.host.path().join("file").exists(), "chapter 6 created /etc/hosts on the host");
}

#[test]
fn a_layer_deletes_and_replaces_what_the_layers_below_it_hold() {
    let _s = common::settings().bind_to_scope();
    let store = TestStore::with(&[common::test_images().layered_layout()]);
    let look = "ls /data /data/dir; cat /data/dir/c";
    let transcript = Transcript::run(&mut store.run(&["--rm"], &["layered", "sh", "-c", look]));
    assert_eq!(
        transcript.command_output(),
        "/data:\nadded\ndir\n\n/data/dir:\nc\nc\n",
        "{transcript}"
    );
    assert_snapshot!("layered", transcript);
}

#[test]
fn a_volume_target_through_a_symlink_of_the_image_lands_where_the_link_points() {
    let store = busybox_store();
    let source = common::temp_dir();
    fs::write(source.path().join("note"), "from the host\n").unwrap();
    // Two links to /srv in an image: a relative one and an absolute one.
    let script = "mkdir -p /srv && ln -s ../srv /etc/relative && ln -s /srv /etc/absolute";
    let made = Transcript::run(&mut store.run(&[], &["busybox", "sh", "-c", script]));
    assert_eq!(made.status, 0, "{made}");
    let id = common::announced_id(&made.output);
    let commit = Transcript::run(&mut store.ch06(&["commit", &id, "linked"]));
    assert_eq!(commit.status, 0, "{commit}");
    let host = source.path().display();
    let volumes = [format!("{host}:/etc/relative/one"), format!("{host}:/etc/absolute/two")];
    let options = ["--rm", "-v", &volumes[0], "-v", &volumes[1]];
    let read = Transcript::run(
        &mut store.run(&options, &["linked", "cat", "/srv/one/note", "/srv/two/note"]),
    );
    assert_eq!(read.command_output(), "from the host\nfrom the host\n", "{read}");
}
