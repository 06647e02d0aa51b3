//! The command line, as clap types only; `main` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ihp-infra",
    version,
    about = "Creates and maintains the AWS infrastructure of an IHP app, from a stack file",
    long_about = "Creates and maintains the AWS infrastructure of an IHP app, from a stack file.\n\n\
        There is no state file: live AWS is the state. Resources are found again by their \
        ihp-infra:stack and Name tags. Credentials, profiles and endpoints come from the \
        standard AWS chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The stack file
    #[arg(long, global = true, default_value = "stack.yaml", value_name = "FILE")]
    pub stack: PathBuf,

    /// More log output on stderr (-v: steps and retries, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the stack file; makes no AWS call
    Validate,
    /// Show what apply would change
    Plan {
        /// Exit 2 when there are changes, 0 when there are none (1 on error)
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Create or update the stack's resources to match the stack file
    Apply {
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
    },
    /// Delete every resource of the stack
    Destroy {
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
        /// Delete the database without keeping a final snapshot (its data is lost)
        #[arg(long)]
        skip_final_snapshot: bool,
        /// Empty the S3 bucket first (its files are lost); without it, a bucket
        /// with objects stops the destroy before anything is deleted
        #[arg(long)]
        delete_bucket_contents: bool,
    },
    /// Print what the server's configuration needs: names, endpoints, regions
    /// (never the password or the secret key)
    Output {
        /// As one JSON object instead of KEY=value lines
        #[arg(long)]
        json: bool,
    },
}
