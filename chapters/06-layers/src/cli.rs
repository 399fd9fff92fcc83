//! The options of `ch06 run`: Docker's form, `run [OPTIONS] IMAGE [COMMAND [ARG…]]`, with
//! every option group of chapters 1–5 and the image's own.

use std::path::PathBuf;

use ch01_chroot::cli::EnvOptions;
use ch02_namespaces::cli::ProcessOptions;
use ch03_pivot_root::cli::MountOptions;
use ch04_cgroups::cli::LimitOptions;
use ch05_network::cli::NetworkOptions;
use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub env: EnvOptions,
    #[command(flatten)]
    pub process: ProcessOptions,
    #[command(flatten)]
    pub mounts: MountOptions,
    #[command(flatten)]
    pub limits: LimitOptions,
    #[command(flatten)]
    pub network: NetworkOptions,

    /// Run the command on this directory (written to in place) instead of an image
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Replace the image's Entrypoint (and drop its Cmd); "" for none
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,

    /// Working directory inside the container [default: the image's WorkingDir, or /]
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as: NAME or UID, with :GROUP or :GID, names from the image's /etc/passwd
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Remove the container's writable layer when it exits
    #[arg(long)]
    pub rm: bool,

    /// Print the OCI runtime config.json the container would run with, and exit
    #[arg(long)]
    pub print_spec: bool,

    /// The image, then the command and its arguments [default: the image's Entrypoint and
    /// Cmd]; with --rootfs, only the command
    #[arg(value_name = "IMAGE [COMMAND", trailing_var_arg = true, required = true)]
    pub words: Vec<String>,
}

impl RunArgs {
    /// The image named (none with --rootfs) and the command after it.
    pub fn image_and_command(&self) -> (Option<&str>, &[String]) {
        match (&self.rootfs, self.words.split_first()) {
            (None, Some((image, command))) => (Some(image.as_str()), command),
            _ => (None, &self.words),
        }
    }
}
