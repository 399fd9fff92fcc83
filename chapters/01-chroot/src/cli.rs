//! The options of `ch01 run`. Each later chapter flattens this struct into its own.

use std::path::PathBuf;

use clap::Args;

use crate::env::EnvRequest;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory that becomes `/` for the command
    pub rootfs: PathBuf,
    /// Set an environment variable inside (KEY=VALUE), or pass on the caller's (KEY)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from FILE: one KEY=VALUE or KEY a line, # for comments
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Command to run inside the rootfs, with its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The environment the user asked for, as the plain value the building blocks take.
    pub fn env_request(&self) -> EnvRequest {
        EnvRequest { vars: self.env.clone(), files: self.env_file.clone() }
    }
}
