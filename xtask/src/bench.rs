//! `cargo xtask bench`: how long a container takes from start to exit, and how much memory
//! the runtime itself uses, for the latest chapter's binary side by side with runc and crun
//! running the same rootfs and command.
//!
//! Each configuration runs `true` a number of times after a few warm-up runs; the table
//! shows the median and the 90th percentile of the wall time, and the largest process: the
//! highest peak resident set size (wait4(2)'s ru_maxrss) of the runtime or of any process it
//! waited for. Processes are not added together.
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
use xtask::process::{as_root, is_root, run};
use xtask::project_root;
use xtask::rootfs::ensure_default_rootfs;

use crate::cargo::{build, cargo};
use crate::chapters;
use crate::vm::{run_in_guest, CgroupLayout};

const WARM_UP_RUNS: usize = 3;
/// The host port the bench publishes: a container start with `-p` adds a DNAT rule, and its
/// exit removes it.
const BENCH_PORT: u16 = 18099;

/// The two programs a measurement runs: the chapter binary, and `bench-spawn`.
#[derive(Debug, clap::Args)]
pub struct Measure {
    /// The chapter binary to measure
    #[arg(long = "measure-runtime", hide = true, requires = "spawner")]
    runtime: Option<PathBuf>,
    /// bench-spawn
    #[arg(long = "measure-spawner", hide = true)]
    spawner: Option<PathBuf>,
}

/// `cargo xtask bench [--guest]`: prepares as the user (cargo never runs as root), then
/// measures as root, through a second run of this program under sudo when we are not root,
/// or in the cgroup v2 guest.
pub fn bench(runs: usize, in_guest: bool, measure: Measure) -> Result<()> {
    ensure!(runs > 0, "--runs must be at least 1");
    if let Measure { runtime: Some(runtime), spawner: Some(spawner) } = measure {
        ensure!(is_root(), "bench's measurement runs containers and needs root");
        return measure_all(runs, &runtime, &spawner);
    }
    let all = chapters::all()?;
    let latest = all.last().context("no chapters yet")?;
    ensure_tools([("runc", "runc"), ("crun", "crun")])?;
    ensure_default_rootfs()?;
    // Optimized, as runc and crun are.
    let mut release = cargo();
    release.args(["build", "--quiet", "--release", "-p", &latest.package, "--bins"]);
    let runtime =
        build(&mut release, false)?.bin(&format!("ch{:02}", latest.number))?.to_path_buf();
    let spawner =
        build(cargo().args(["build", "--quiet", "-p", "xtask", "--bin", "bench-spawn"]), false)?
            .bin("bench-spawn")?
            .to_path_buf();
    let xtask = std::env::current_exe().context("find the xtask binary")?;
    let runs_arg = runs.to_string();
    let args = ["bench", "--runs", &runs_arg, "--measure-runtime"].map(String::from);
    let args = [&args[..], &[path_arg(&runtime)?, "--measure-spawner".into(), path_arg(&spawner)?]]
        .concat();
    if in_guest {
        let run = run_in_guest(CgroupLayout::V2, &xtask, &args, &[], &project_root())?;
        print!("{}", run.stdout);
        ensure!(run.status == 0, "the measurement in the guest failed");
        return Ok(());
    }
    if is_root() {
        return measure_all(runs, &runtime, &spawner);
    }
    run(as_root(&xtask).args(&args))
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str().map(String::from).with_context(|| format!("{} is not UTF-8", path.display()))
}

fn measure_all(runs: usize, binary: &Path, spawner: &Path) -> Result<()> {
    let bundle = Bundle::new(&ensure_default_rootfs()?)?;
    println!("{runs} runs of `true` each, after {WARM_UP_RUNS} warm-up runs\n");
    println!("{:<40} {:>10} {:>10} {:>12}", "runtime", "median", "p90", "largest RSS");
    for (label, command) in configurations(binary, &bundle) {
        match measure_runs(spawner, &command, runs) {
            Ok(measured) => println!(
                "{label:<40} {:>10} {:>10} {:>12}",
                show_ms(measured.median()),
                show_ms(measured.p90()),
                format!("{:.1} MiB", measured.max_rss_kib as f64 / 1024.0)
            ),
            Err(err) => println!("{label:<40} failed: {}", first_line(&err)),
        }
    }
    println!(
        "\nrunc's and crun's default spec (`runc spec`) gives the container a network \
         namespace with only lo: compare them with --net none. The bridge network stays for \
         the next container; `cargo xtask network-rm` removes it."
    );
    Ok(())
}

fn first_line(err: &anyhow::Error) -> String {
    format!("{err:#}").lines().next().unwrap_or_default().to_string()
}

/// What is compared: the chapter binary with and without its bridge network and with a
/// published port, runc and crun.
fn configurations(binary: &Path, bundle: &Bundle) -> Vec<(String, Vec<String>)> {
    let name = binary.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let publish = format!("{BENCH_PORT}:80");
    let chapter = |options: &[&str]| {
        let mut command = vec![binary.display().to_string(), "run".into()];
        command.extend(options.iter().map(|option| option.to_string()));
        command.extend([bundle.rootfs().display().to_string(), "--".into(), "true".into()]);
        command
    };
    let oci = |runtime: &str| {
        let state = bundle.dir.join(format!("state-{runtime}")).display().to_string();
        let bundle_dir = bundle.dir.display().to_string();
        let id = format!("crabbox-bench-{}", std::process::id());
        [runtime, "--root", &state, "run", "--bundle", &bundle_dir, &id].map(String::from).to_vec()
    };
    vec![
        ("(the floor: `true` alone)".into(), vec!["true".into()]),
        (format!("{name} run --net none"), chapter(&["--net", "none"])),
        (format!("{name} run (bridge network)"), chapter(&[])),
        (format!("{name} run -p {BENCH_PORT}:80 (one port)"), chapter(&["-p", &publish])),
        ("runc run".into(), oci("runc")),
        ("crun run".into(), oci("crun")),
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

fn measure_runs(spawner: &Path, command: &[String], runs: usize) -> Result<Measured> {
    for _ in 0..WARM_UP_RUNS {
        run_once(spawner, command)?;
    }
    let mut measured = Measured { times: Vec::new(), max_rss_kib: 0 };
    for _ in 0..runs {
        let (time, rss) = run_once(spawner, command)?;
        measured.times.push(time);
        measured.max_rss_kib = measured.max_rss_kib.max(rss);
    }
    measured.times.sort();
    Ok(measured)
}

/// Runs `command` once, through `bench-spawn`: its wall time, and its peak RSS in KiB.
fn run_once(spawner: &Path, command: &[String]) -> Result<(Duration, i64)> {
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
