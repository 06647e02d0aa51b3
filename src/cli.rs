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

    /// More log output on stderr (-v: steps, retries and AWS calls, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors and what was asked for (the plan, the outputs) are printed
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// No colours (also when NO_COLOR is set or the output is not a terminal)
    #[arg(long, global = true)]
    pub no_color: bool,

    /// The AWS profile to use, over AWS_PROFILE and keys in the environment
    /// (as with the AWS CLI); the region comes from the stack file
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

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
    /// Write a commented stack file to start from (never overwrites one)
    Init {
        /// Names every resource; asked for on a terminal when not given
        #[arg(long)]
        prefix: Option<String>,
        /// The AWS region; asked for on a terminal when not given
        #[arg(long)]
        region: Option<String>,
        /// The EC2 key pair for SSH; asked for on a terminal when not given
        #[arg(long, value_name = "NAME")]
        key_name: Option<String>,
    },
    /// Check the stack file; makes no AWS call
    Validate,
    /// Show what apply would change
    Plan {
        /// Exit 2 when there are changes, 0 when there are none (1 on error)
        #[arg(long)]
        detailed_exitcode: bool,
        /// Print the plan as one JSON document (docs/plan-json.md gives its
        /// schema); add --detailed-exitcode to exit 2 when there are changes
        #[arg(long)]
        json: bool,
        /// Show what `destroy` would delete, and what becomes of the data
        /// (final snapshots kept, buckets with files refused); changes nothing
        #[arg(long)]
        destroy: bool,
        /// Print the plan's resources and the order they are worked in, as a
        /// mermaid flowchart (GitHub renders it in Markdown) or Graphviz DOT
        #[arg(long, value_enum, value_name = "FORMAT", num_args = 0..=1,
              default_missing_value = "mermaid", conflicts_with = "json")]
        graph: Option<GraphFormat>,
        /// Plan to replace this resource (e.g. instance.app) though nothing
        /// forces it; repeatable
        #[arg(long, value_name = "ADDRESS")]
        replace: Vec<ihp_infra::model::Address>,
        /// Also save the plan to FILE, for `ihp-infra apply FILE` (which
        /// applies it only if it is still the plan; good for 24 hours)
        #[arg(long, value_name = "FILE", conflicts_with = "destroy")]
        out: Option<std::path::PathBuf>,
    },
    /// List every resource of the stack, unchanged ones too, with its id and
    /// what apply would do with it
    #[command(alias = "status")]
    Show,
    /// Create or update the stack's resources to match the stack file
    Apply {
        /// A plan saved by `plan --out`: applied without asking, only if
        /// planning again gives the same plan (otherwise nothing changes)
        #[arg(value_name = "PLAN_FILE", conflicts_with = "replace")]
        plan_file: Option<std::path::PathBuf>,
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
        /// Replace this resource though nothing forces it (e.g. instance.app,
        /// onto the newest image of its NixOS release); repeatable. A server
        /// holding Postgres or the database still needs its --replace-… flag
        #[arg(long, value_name = "ADDRESS")]
        replace: Vec<ihp_infra::model::Address>,
        /// Let a change in the stack file replace the database: the new one
        /// starts empty, the old one's data stays in its final snapshot
        #[arg(long)]
        replace_database: bool,
        /// Let a change in the stack file replace the server of a stack without
        /// an RDS database (the new one starts without the Postgres data on the
        /// old disk, which is kept as a snapshot)
        #[arg(long)]
        replace_server: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Delete every resource of the stack
    Destroy {
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
        /// Delete the database without keeping a final snapshot (its data is
        /// lost); in a stack without one, the server's disk likewise
        #[arg(long)]
        skip_final_snapshot: bool,
        /// Empty the S3 bucket first (its files are lost); without it, a bucket
        /// with objects stops the destroy before anything is deleted
        #[arg(long)]
        delete_bucket_contents: bool,
        /// Delete the backups bucket too, with every database dump in it
        /// (without it, destroy keeps that bucket)
        #[arg(long)]
        delete_backups: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Print what the next step needs: the server's address, an SSH line and
    /// ~/.ssh/config block, DATABASE_URL (password masked), bucket, log group
    Output {
        /// Print only this value, raw (e.g. `ssh root@$(ihp-infra output INSTANCE_IP)`):
        /// INSTANCE_URL, INSTANCE_IP, DB_ENDPOINT, DB_USERNAME, DATABASE_URL,
        /// AWS_REGION, S3_BUCKET, CLOUDWATCH_LOG_GROUP, S3_ACCESS_KEY_FILE, DOMAIN
        #[arg(value_name = "NAME", conflicts_with = "json")]
        name: Option<String>,
        /// As one JSON object
        #[arg(long)]
        json: bool,
        /// Show the database password in DATABASE_URL (needs db_password)
        #[arg(long)]
        show_secrets: bool,
    },
    /// Write the ssh entry deploy-to-nixos connects through
    /// (~/.ssh/ihp-infra/<prefix>.config), with the server's host keys pinned
    /// from its console
    SshConfig {
        /// Also add `Include ~/.ssh/ihp-infra/*.config` at the top of
        /// ~/.ssh/config (asks first; nothing else there changes)
        #[arg(long)]
        install: bool,
        /// Do not ask before changing ~/.ssh/config
        #[arg(long)]
        auto_approve: bool,
        /// The server's ssh port
        #[arg(long, default_value_t = 22)]
        port: u16,
    },
    /// Take over a stack made by the IHP boilerplate's Terraform (or by hand):
    /// tags it as the stack's and writes the stack file's settings that keep
    /// the server and database; nothing is replaced. Then run apply
    Adopt {
        /// terraform.tfstate, or the output of `terraform show -json`;
        /// without it, the boilerplate's Name tags are searched
        #[arg(long, value_name = "PATH", conflicts_with_all = ["instance", "database"])]
        from_terraform: Option<std::path::PathBuf>,
        /// A server made by hand (i-…), with the network around it
        #[arg(long, value_name = "ID")]
        instance: Option<String>,
        /// A database made by hand (its RDS identifier)
        #[arg(long, value_name = "IDENTIFIER")]
        database: Option<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Break the stack's lock, left behind by a run that was killed or whose
    /// machine was lost (docs/how-it-works.md, "Two runs at once")
    Unlock {
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Print the stack file's JSON Schema, for editor completion and errors
    /// while typing: `ihp-infra schema > stack.schema.json`, then start
    /// stack.yaml with `# yaml-language-server: $schema=./stack.schema.json`
    Schema,
    /// Print a shell completion script (e.g. `ihp-infra completions bash > ~/.local/share/bash-completion/completions/ihp-infra`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// When another apply or destroy of the stack runs: wait this long for it
    /// (e.g. 30s, 10m) instead of stopping at once
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "0s")]
    pub lock_timeout: std::time::Duration,
}

/// How `plan --graph` draws the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}
