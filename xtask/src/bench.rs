//! `cargo xtask bench`: how long a container takes from start to exit, and how much memory
//! the runtime itself uses, for the latest two chapters side by side with runc and crun
//! running the same rootfs and command; then, for the latest chapter's images, what a user
//! would compare it with: `image load` of a docker-archive beside `skopeo copy`, and the
//! unpack of a 250 MB gzip layer beside GNU tar and `umoci unpack` (see [`layer`]).
//!
//! Each configuration runs a number of times after a few warm-up runs; a table shows the
//! median and the 90th percentile of the wall time, and the largest process: the highest
//! peak resident set size (wait4(2)'s ru_maxrss) of the runtime or of any process it waited
//! for. Processes are not added together. A configuration that writes (a load, an unpack)
//! gets a fresh, empty folder for each run, removed after it, untimed.
//!
//! ru_maxrss has a floor: a process keeps, across execve(2), the peak of the memory it had
//! before, which for a child is its parent's. So each run is started by a fresh, small
//! program, xtask's `bench-spawn`, and the table shows that floor too, measured with `true`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use xtask::host_tools::ensure_tools;
use xtask::images::{ensure_test_images, TestImages, BUSYBOX};
use xtask::process::{as_root, is_root, run};
use xtask::project_root;
use xtask::rootfs::ensure_default_rootfs;

use crate::cargo::{build, cargo};
use crate::chapters::{self, Chapter};
use crate::vm::{run_in_guest, CgroupLayout};

mod layer;

use layer::{ensure_bench_layer, BenchLayer};

const WARM_UP_RUNS: usize = 3;
/// A layer unpack takes seconds: fewer runs, after one warm-up (which fills the page cache).
const UNPACK_WARM_UP_RUNS: usize = 1;
const MAX_UNPACK_RUNS: usize = 3;
/// The host port the bench publishes: a container start with `-p` adds a DNAT rule, and its
/// exit removes it.
const BENCH_PORT: u16 = 18099;

/// The programs a measurement runs: the chapter binaries, and `bench-spawn`.
#[derive(Debug, clap::Args)]
pub struct Measure {
    /// The chapter binary that runs a rootfs directory (the one before the latest)
    #[arg(long = "measure-runtime", hide = true, requires_all = ["image_runtime", "spawner"])]
    runtime: Option<PathBuf>,
    /// The latest chapter's binary, which runs images
    #[arg(long = "measure-image-runtime", hide = true)]
    image_runtime: Option<PathBuf>,
    /// bench-spawn
    #[arg(long = "measure-spawner", hide = true)]
    spawner: Option<PathBuf>,
    /// Which tables to measure
    #[arg(long = "measure-tables", hide = true, value_enum, default_value_t = Tables::All)]
    tables: Tables,
}

/// The tables of a measurement: `--guest` measures the container starts in the cgroup v2
/// guest (for crun) and the images on the host, whose cgroup layout they do not depend on
/// and whose disk they should be measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tables {
    All,
    Starts,
    Images,
}

/// The programs and files a measurement uses, made before it as the user.
struct Subjects {
    /// The binary of the chapter before the latest, which runs a rootfs directory (`ch05`).
    runtime: PathBuf,
    /// The latest chapter's binary, which runs images (`ch06`).
    image_runtime: PathBuf,
    spawner: PathBuf,
    images: TestImages,
    layer: BenchLayer,
}

impl Subjects {
    /// The latest chapter's command line `chNN --root STORE args…`.
    fn image_command(&self, store: &Path, args: &[&str]) -> Vec<String> {
        let binary = self.image_runtime.display().to_string();
        [&[binary.as_str(), "--root", &store.display().to_string()][..], args]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    }
}

/// `cargo xtask bench [--guest]`: prepares as the user (cargo never runs as root), then
/// measures as root, through a second run of this program under sudo when we are not root;
/// with `--guest`, the container starts in the cgroup v2 guest (see [`Tables`]).
pub fn bench(runs: usize, in_guest: bool, measure: Measure) -> Result<()> {
    ensure!(runs > 0, "--runs must be at least 1");
    if let Measure {
        runtime: Some(runtime),
        image_runtime: Some(image_runtime),
        spawner: Some(spawner),
        tables,
    } = measure
    {
        ensure!(is_root(), "bench's measurement runs containers and needs root");
        return measure_tables(runs, &prepared(runtime, image_runtime, spawner)?, tables);
    }
    let crates = chapters::crates()?;
    let [.., before, latest] = &crates[..] else { bail!("bench compares two chapters") };
    ensure_tools([("runc", "runc"), ("crun", "crun"), ("skopeo", "skopeo"), ("umoci", "umoci")])?;
    let runtime = release_binary(before)?;
    let image_runtime = release_binary(latest)?;
    let spawner =
        build(cargo().args(["build", "--quiet", "-p", "xtask", "--bin", "bench-spawn"]), false)?
            .bin("bench-spawn")?
            .to_path_buf();
    let subjects = prepared(runtime, image_runtime, spawner)?;
    let xtask = std::env::current_exe().context("find the xtask binary")?;
    let mut args = ["bench", "--runs", &runs.to_string()].map(String::from).to_vec();
    for (flag, path) in [
        ("--measure-runtime", &subjects.runtime),
        ("--measure-image-runtime", &subjects.image_runtime),
        ("--measure-spawner", &subjects.spawner),
    ] {
        args.extend([flag.to_string(), path_arg(path)?]);
    }
    let tables = |tables: &str| [&args[..], &["--measure-tables".into(), tables.into()]].concat();
    if in_guest {
        let run = run_in_guest(CgroupLayout::V2, &xtask, &tables("starts"), &[], &project_root())?;
        print!("{}", run.stdout);
        ensure!(run.status == 0, "the measurement in the guest failed");
        println!();
        return measure_as_root(&xtask, &subjects, runs, Tables::Images, &tables("images"));
    }
    measure_as_root(&xtask, &subjects, runs, Tables::All, &tables("all"))
}

/// Measures `tables`: here when we are root, else through `xtask args` under sudo.
fn measure_as_root(
    xtask: &Path,
    subjects: &Subjects,
    runs: usize,
    tables: Tables,
    args: &[String],
) -> Result<()> {
    if is_root() {
        return measure_tables(runs, subjects, tables);
    }
    run(as_root(xtask).args(args))
}

/// The chapter's binary, built optimized (as runc, crun, skopeo and umoci are).
fn release_binary(chapter: &Chapter) -> Result<PathBuf> {
    let mut release = cargo();
    release.args(["build", "--quiet", "--release", "-p", &chapter.package, "--bins"]);
    Ok(build(&mut release, false)?.bin(&format!("ch{:02}", chapter.number))?.to_path_buf())
}

/// The binaries with the files they are measured on; makes the files when they are missing.
fn prepared(runtime: PathBuf, image_runtime: PathBuf, spawner: PathBuf) -> Result<Subjects> {
    ensure_default_rootfs()?;
    let images = ensure_test_images()?;
    let layer = ensure_bench_layer()?;
    Ok(Subjects { runtime, image_runtime, spawner, images, layer })
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str().map(String::from).with_context(|| format!("{} is not UTF-8", path.display()))
}

/// One row of a table: a command, and how each run of it starts and is checked.
struct Row {
    label: String,
    command: Vec<String>,
    /// A folder made empty before each run and removed after it: where the command writes.
    scratch: Option<PathBuf>,
    /// A path that a run leaves when it did the work: a binary that cannot do it yet may
    /// exit 0 at once, and its time would say nothing.
    leaves: Option<PathBuf>,
    /// Why the row cannot be measured, found before it ran.
    unready: Option<String>,
}

impl Row {
    fn new(label: impl Into<String>, command: Vec<String>) -> Row {
        Row { label: label.into(), command, scratch: None, leaves: None, unready: None }
    }

    /// The row, run in a fresh `scratch` each time, and checked to leave `leaves`.
    fn in_scratch(mut self, scratch: PathBuf, leaves: PathBuf) -> Row {
        self.scratch = Some(scratch);
        self.leaves = Some(leaves);
        self
    }
}

/// Measures and prints `tables`, with everything they write in one temporary folder.
fn measure_tables(runs: usize, subjects: &Subjects, tables: Tables) -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("crabbox-bench-").tempdir()?;
    if tables != Tables::Images {
        measure_starts(runs, subjects, scratch.path())?;
    }
    if tables != Tables::Starts {
        measure_images(runs, subjects, scratch.path())?;
    }
    Ok(())
}

/// The container starts, and the image start against the directory start.
fn measure_starts(runs: usize, subjects: &Subjects, scratch: &Path) -> Result<()> {
    let bundle = Bundle::new(&ensure_default_rootfs()?)?;
    let image_runtime = file_name(&subjects.image_runtime);
    let runtime = file_name(&subjects.runtime);
    println!("{runs} runs of `true` each, after {WARM_UP_RUNS} warm-up runs\n");
    let starts = configurations(subjects, &bundle, scratch);
    let measured = measure_table(&subjects.spawner, &starts, WARM_UP_RUNS, runs);
    let ratio = format!("{image_runtime} run IMAGE / {runtime} run ROOTFS, --net none");
    print_ratio(&measured, (IMAGE_RUN_ROW, DIRECTORY_RUN_ROW), &ratio, "≤ 1.5×");
    println!(
        "\nrunc's and crun's default spec (`runc spec`) gives the container a network \
         namespace with only lo: compare them with --net none. The bridge network stays for \
         the next container; `cargo xtask network-rm` removes it."
    );
    Ok(())
}

/// The load of the busybox docker-archive, and the unpack of the bench's layer.
fn measure_images(runs: usize, subjects: &Subjects, scratch: &Path) -> Result<()> {
    let image_runtime = file_name(&subjects.image_runtime);
    let archive = subjects.images.busybox_docker_archive();
    println!(
        "\nLoading {}: {runs} runs after {WARM_UP_RUNS} warm-up runs, each into a fresh \
         store\n",
        archive.display()
    );
    let measured =
        measure_table(&subjects.spawner, &load_rows(subjects, scratch), WARM_UP_RUNS, runs);
    print_ratio(&measured, (0, 1), &format!("{image_runtime} image load / skopeo copy"), "≤ 1×");

    let unpack_runs = runs.min(MAX_UNPACK_RUNS);
    let layer = &subjects.layer;
    println!(
        "\nUnpacking a gzip layer of {:.0} MB ({:.0} MB uncompressed): {unpack_runs} runs \
         after {UNPACK_WARM_UP_RUNS} warm-up run, each into a fresh folder in {} (TMPDIR \
         chooses the file system)\n",
        megabytes(fs::metadata(&layer.blob)?.len()),
        megabytes(layer.uncompressed_bytes),
        std::env::temp_dir().display()
    );
    let rows = unpack_rows(subjects, scratch);
    let measured = measure_table(&subjects.spawner, &rows, UNPACK_WARM_UP_RUNS, unpack_runs);
    print_throughputs(&rows, &measured, layer.uncompressed_bytes);
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Measures each row and prints a line for it; returns what each row measured, or `None`
/// for a row that could not be measured (its line says why).
fn measure_table(
    spawner: &Path,
    rows: &[Row],
    warm_up: usize,
    runs: usize,
) -> Vec<Option<Measured>> {
    println!("{:<50} {:>10} {:>10} {:>12}", "", "median", "p90", "largest RSS");
    let mut table = Vec::new();
    for row in rows {
        let label = &row.label;
        match measure_runs(spawner, row, warm_up, runs) {
            Ok(measured) => {
                println!(
                    "{label:<50} {:>10} {:>10} {:>12}",
                    show_ms(measured.median()),
                    show_ms(measured.p90()),
                    format!("{:.1} MiB", measured.max_rss_kib as f64 / 1024.0)
                );
                table.push(Some(measured));
            }
            Err(err) => {
                println!("{label:<50} {}", first_line(&err));
                table.push(None);
            }
        }
    }
    table
}

/// Prints the ratio of the median times of rows `(a, b)` and its target, when both ran.
fn print_ratio(table: &[Option<Measured>], (a, b): (usize, usize), what: &str, target: &str) {
    if let (Some(Some(a)), Some(Some(b))) = (table.get(a), table.get(b)) {
        let ratio = a.median().as_secs_f64() / b.median().as_secs_f64();
        println!("{what}: {ratio:.2}× (target {target})");
    }
}

/// Prints each unpack's throughput of uncompressed bytes (at its median time), and how it
/// compares with GNU tar's, the first row.
fn print_throughputs(rows: &[Row], table: &[Option<Measured>], bytes: u64) {
    let speed = |measured: &Measured| megabytes(bytes) / measured.median().as_secs_f64();
    let tar = table.first().and_then(Option::as_ref).map(speed);
    println!();
    for (row, measured) in rows.iter().zip(table) {
        let Some(measured) = measured else { continue };
        let versus = tar.map(|tar| format!(", {:.2}× GNU tar", speed(measured) / tar));
        println!("{}: {:.0} MB/s{}", row.label, speed(measured), versus.unwrap_or_default());
    }
    println!("(targets: crabbox ≥ 1.5× GNU tar, and ≥ 1× umoci)");
}

fn first_line(err: &anyhow::Error) -> String {
    format!("{err:#}").lines().next().unwrap_or_default().to_string()
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

/// The rows of [`configurations`] whose times are compared.
const DIRECTORY_RUN_ROW: usize = 1;
const IMAGE_RUN_ROW: usize = 4;

/// Container starts: the chapter before the latest on a rootfs directory, with and without
/// its bridge network and with a published port; the latest on an image (where the overlay
/// should cost a mount, not a copy); runc and crun.
fn configurations(subjects: &Subjects, bundle: &Bundle, scratch: &Path) -> Vec<Row> {
    let name = file_name(&subjects.runtime);
    let publish = format!("{BENCH_PORT}:80");
    let chapter = |options: &[&str]| {
        let mut command = vec![subjects.runtime.display().to_string(), "run".into()];
        command.extend(strings(options));
        command.extend([bundle.rootfs().display().to_string(), "--".into(), "true".into()]);
        command
    };
    let oci = |runtime: &str| {
        let state = bundle.dir.join(format!("state-{runtime}")).display().to_string();
        let bundle_dir = bundle.dir.display().to_string();
        let id = format!("crabbox-bench-{}", std::process::id());
        strings(&[runtime, "--root", &state, "run", "--bundle", &bundle_dir, &id])
    };
    vec![
        Row::new("(the floor: `true` alone)", strings(&["true"])),
        Row::new(format!("{name} run --net none ROOTFS"), chapter(&["--net", "none"])),
        Row::new(format!("{name} run ROOTFS (bridge network)"), chapter(&[])),
        Row::new(format!("{name} run -p {publish} ROOTFS (one port)"), chapter(&["-p", &publish])),
        image_run_row(subjects, &scratch.join("run-store")),
        Row::new("runc run", oci("runc")),
        Row::new("crun run", oci("crun")),
    ]
}

/// `ch06 --root STORE run --rm --net none busybox:latest true`, on a store that the busybox
/// docker-archive is loaded into first. When the binary cannot load or run an image yet,
/// the row says so instead of timing it.
fn image_run_row(subjects: &Subjects, store: &Path) -> Row {
    let name = file_name(&subjects.image_runtime);
    let label = format!("{name} run --rm --net none {BUSYBOX}");
    let archive = subjects.images.busybox_docker_archive().display().to_string();
    let run = |command: &[&str]| {
        let options = ["run", "--rm", "--net", "none", BUSYBOX];
        subjects.image_command(store, &[&options[..], command].concat())
    };
    let ready = probe(&subjects.image_command(store, &["image", "load", &archive]), "Loaded image")
        .and_then(|()| probe(&run(&["echo", "crabbox"]), "crabbox"));
    let mut row = Row::new(label, run(&["true"]));
    if let Err(err) = ready {
        row.unready = Some(format!("not measured: {err:#}"));
    }
    row
}

/// Runs `command` once, untimed, and fails unless it succeeds and prints `expected`.
fn probe(command: &[String], expected: &str) -> Result<()> {
    let output = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {}", command[0]))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr.lines().next().map(|line| format!(": {line}")).unwrap_or_default();
    let what = format!("`{}`", command[1..].join(" "));
    ensure!(output.status.success(), "{what} failed ({}){said}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(stdout.contains(expected), "{what} printed no `{expected}`{said}");
    Ok(())
}

/// `image load` of the busybox docker-archive into a fresh store, and what a user would
/// compare it with: skopeo copying the archive into a fresh OCI layout.
fn load_rows(subjects: &Subjects, scratch: &Path) -> Vec<Row> {
    let archive = subjects.images.busybox_docker_archive().display().to_string();
    let fresh = scratch.join("load");
    let store = fresh.join("store");
    let layout = fresh.join("layout");
    let name = file_name(&subjects.image_runtime);
    let load = subjects.image_command(&store, &["image", "load", &archive]);
    let source = format!("docker-archive:{archive}");
    let target = format!("oci:{}:{BUSYBOX}", layout.display());
    vec![
        Row::new(format!("{name} image load busybox.docker.tar"), load)
            .in_scratch(fresh.clone(), store.join("images/index.json")),
        Row::new(
            "skopeo copy docker-archive: oci:",
            strings(&["skopeo", "copy", "--quiet", &source, &target]),
        )
        .in_scratch(fresh, layout.join("index.json")),
    ]
}

/// The bench's layer unpacked by GNU tar, by `umoci unpack`, and by crabbox's `image load`
/// of the layout (which unpacks the layer into the store).
fn unpack_rows(subjects: &Subjects, scratch: &Path) -> Vec<Row> {
    let layer = &subjects.layer;
    let fresh = scratch.join("unpack");
    let (bundle, store) = (fresh.join("bundle"), fresh.join("store"));
    let name = file_name(&subjects.image_runtime);
    let path = |path: &Path| path.display().to_string();
    let tar = strings(&["tar", "-xzf", &path(&layer.blob), "-C", &path(&fresh)]);
    let image = format!("{}:{}", path(&layer.layout), layer::REFERENCE);
    let umoci = strings(&["umoci", "unpack", "--image", &image, &path(&bundle)]);
    let load = subjects.image_command(&store, &["image", "load", &path(&layer.layout)]);
    vec![
        Row::new("GNU tar -xzf", tar).in_scratch(fresh.clone(), fresh.join("big")),
        Row::new("umoci unpack", umoci).in_scratch(fresh.clone(), bundle.join("rootfs/big")),
        Row::new(format!("{name} image load (unpacks the layer)"), load)
            .in_scratch(fresh, store.join("layers").join(&layer.diff_id_hex).join("big")),
    ]
}

struct Measured {
    times: Vec<Duration>,
    max_rss_kib: i64,
}

impl Measured {
    /// The middle time (the upper of the two middle ones for an even number of runs).
    fn median(&self) -> Duration {
        self.times[self.times.len() / 2]
    }

    /// The smallest time that at least 90% of the runs took no longer than.
    fn p90(&self) -> Duration {
        self.times[(self.times.len() * 9).div_ceil(10) - 1]
    }
}

fn measure_runs(spawner: &Path, row: &Row, warm_up: usize, runs: usize) -> Result<Measured> {
    if let Some(why) = &row.unready {
        bail!("{why}");
    }
    for _ in 0..warm_up {
        run_once(spawner, row)?;
    }
    let mut measured = Measured { times: Vec::new(), max_rss_kib: 0 };
    for _ in 0..runs {
        let (time, rss) = run_once(spawner, row)?;
        measured.times.push(time);
        measured.max_rss_kib = measured.max_rss_kib.max(rss);
    }
    measured.times.sort();
    Ok(measured)
}

/// Runs the row's command once, through `bench-spawn`, in a fresh scratch folder when it
/// has one: its wall time, and its peak RSS in KiB.
fn run_once(spawner: &Path, row: &Row) -> Result<(Duration, i64)> {
    if let Some(scratch) = &row.scratch {
        fs::create_dir_all(scratch).with_context(|| format!("create {}", scratch.display()))?;
    }
    let timed = spawn_once(spawner, &row.command);
    let left = row.leaves.as_ref().map(|leaves| leaves.symlink_metadata().is_ok());
    if let Some(scratch) = &row.scratch {
        fs::remove_dir_all(scratch).with_context(|| format!("remove {}", scratch.display()))?;
    }
    let timed = timed?;
    if let (Some(false), Some(leaves)) = (left, &row.leaves) {
        bail!(
            "not measured: `{}` exits 0 but leaves no {}",
            row.command[1..].join(" "),
            leaves.display()
        );
    }
    Ok(timed)
}

/// Runs `command` once, through `bench-spawn`: its wall time, and its peak RSS in KiB.
fn spawn_once(spawner: &Path, command: &[String]) -> Result<(Duration, i64)> {
    let output = Command::new(spawner)
        .args(command)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {}", command[0]))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        bail!("`{}` failed: {}", command.join(" "), why.trim());
    }
    let numbers: Vec<i64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let [micros, rss] = numbers[..] else { bail!("bench-spawn printed `{text}`") };
    Ok((Duration::from_micros(micros as u64), rss))
}

fn show_ms(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

/// An OCI bundle in a temporary folder: a copy of the rootfs, and the config.json that
/// `runc spec` writes, running `true`. Removed when dropped.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new(rootfs: &Path) -> Result<Bundle> {
        // A new folder only we can enter (mode 0700, a random name): runc and crun run what
        // it holds as root, so it must not be one someone else prepared.
        let dir = tempfile::Builder::new().prefix("crabbox-bench-").tempdir()?.keep();
        let bundle = Bundle { dir };
        let copied = Command::new("cp").arg("-a").arg(rootfs).arg(bundle.rootfs()).status()?;
        ensure!(copied.success(), "copy the rootfs to {}", bundle.rootfs().display());
        run(Command::new("runc").arg("spec").current_dir(&bundle.dir))?;
        let path = bundle.dir.join("config.json");
        let mut config: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
        config["process"]["args"] = serde_json::json!(["true"]);
        config["process"]["terminal"] = Value::Bool(false);
        fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        Ok(bundle)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
