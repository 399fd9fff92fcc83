//! `ch06`: images and containers made from them.

use std::path::PathBuf;
use std::process::ExitCode;

use ch01_chroot::process::exit_code_for;
use ch06_layers::image_cli::{run_image_command, ImageCommand};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ch06", version, about = "Chapter 6: images as layer stacks")]
struct Cli {
    /// Where images, layers and containers are stored
    #[arg(long, global = true, default_value = "/var/lib/crabbox")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage images: load, ls, inspect, rm, save, import
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Image { command } => {
            exit_code_for("ch06", run_image_command(&cli.root, command).map(|()| 0))
        }
    }
}
