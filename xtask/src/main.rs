//! `cargo xtask`: the workshop's tasks. Each task lives in its own module.

mod bench;
mod book;
mod cargo;
mod chapters;
mod check;
mod demo;
mod doctor;
mod exercises;
mod guarantee;
mod network;
mod test;
#[cfg(test)]
mod tidy;
mod vm;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "The crabbox workshop's tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Check whether this machine can run each chapter, and say how to fix what is missing
    Doctor,
    /// Build the default busybox rootfs (.crabbox/rootfs/busybox) and the images made from it
    /// for chapter 6 with umoci and skopeo (.crabbox/images)
    Rootfs,
    /// A short narrated tour of what the most advanced chapter isolates
    Demo,
    /// Everything CI checks: fmt, clippy, unit tests, every chapter's checks, the exercise
    /// guarantee, the book
    Test,
    /// The exercise guarantee of chapter N (or of every chapter): each exercise stripped, and
    /// each of its mistakes, is caught; each exercise's checks pass one exercise at a time
    Guarantee { chapter: Option<u32> },
    /// Build chapter N and run its checks, one line per check
    CheckChapter {
        chapter: u32,
        /// Only the checks of exercise N.K
        #[arg(long, value_name = "K")]
        exercise: Option<u32>,
        /// Also run them in the throwaway guests the chapter asks for (cgroup v2)
        #[arg(long)]
        guests: bool,
    },
    /// The fuller, second hint of exercise N.K (`cargo xtask hint 3.1`)
    Hint { exercise: String },
    /// Replace the exercise regions of chapter N with `todo!` (your work is saved first)
    Exercise { chapter: u32 },
    /// Put the reference solution of chapter N back (your work is saved first)
    Solution { chapter: u32 },
    /// Build the book into book/book/
    Book {
        /// Serve it on http://127.0.0.1:3000/
        #[arg(long)]
        serve: bool,
    },
    /// Time container start to exit and the runtime's memory, side by side with runc and crun
    Bench {
        /// Measured runs per runtime
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Measure in the cgroup v2 guest (crun refuses a cgroup v1 or hybrid host)
        #[arg(long)]
        guest: bool,
        #[command(flatten)]
        measure: bench::Measure,
    },
    /// Remove chapter 5's bridge crabbox0 and NAT rules, once no container uses them
    NetworkRm,
    /// Run a command in a throwaway qemu guest with a pure cgroup v2 (or v1) layout
    VmTest(vm::VmArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Doctor => doctor::doctor(),
        Task::Rootfs => {
            let rootfs = xtask::rootfs::ensure_default_rootfs()?;
            println!("{}", rootfs.display());
            let images = xtask::images::ensure_test_images()
                .context("make chapter 6's test images (the rootfs is ready)")?;
            println!("{}", images.dir.display());
            Ok(())
        }
        Task::Demo => demo::demo(),
        Task::Test => test::test(),
        Task::CheckChapter { chapter, exercise, guests } => {
            check::check_chapter(chapter, exercise, guests)
        }
        Task::Hint { exercise } => check::hint(&exercise),
        Task::Guarantee { chapter } => guarantee::run(chapter),
        Task::Exercise { chapter } => {
            exercises::exercise(chapters::find(&chapters::all()?, chapter)?)
        }
        Task::Solution { chapter } => {
            exercises::solution(chapters::find(&chapters::all()?, chapter)?)
        }
        Task::Book { serve } => book::book(serve),
        Task::Bench { runs, guest, measure } => bench::bench(runs, guest, measure),
        Task::NetworkRm => network::network_rm(),
        Task::VmTest(args) => vm::vm_test(&args),
    }
}
