//! The options of `ch01 run`. Each group of options is a struct of its own, so each later
//! chapter (and chapter 6, whose positionals are `IMAGE [COMMAND…]`) flattens the groups it
//! keeps beside its own positionals.

use std::path::PathBuf;

use clap::Args;

use crate::env::EnvRequest;

/// `ch01 run [-e KEY[=VALUE]]… [--env-file FILE]… ROOTFS -- COMMAND`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory that becomes `/` for the command
    pub rootfs: PathBuf,

    #[command(flatten)]
    pub env: EnvOptions,

    /// Command to run inside the rootfs, with its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The container's environment: `-e` and `--env-file`.
#[derive(Debug, Clone, Args)]
pub struct EnvOptions {
    /// Set an environment variable inside (KEY=VALUE), or pass on the caller's (KEY)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from FILE: one KEY=VALUE or KEY a line, # for comments
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
}

impl EnvOptions {
    /// The environment the user asked for, as the plain value the building blocks take.
    pub fn env_request(&self) -> EnvRequest {
        EnvRequest { vars: self.env.clone(), files: self.env_file.clone() }
    }
}
