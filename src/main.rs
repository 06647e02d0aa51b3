//! The `ihp-infra` binary: parses the command line, asks for confirmation,
//! renders. Every decision is made in the library.

mod cli;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use cli::{Cli, Command, LogFormat};
use ihp_infra::executor::{self, Outcome};
use ihp_infra::model::Kind;
use ihp_infra::plan::{Action, Plan};
use ihp_infra::render::{self, Palette};
use ihp_infra::stack::{self, Stack};
use ihp_infra::{Goal, aws, db_info};

fn main() -> ExitCode {
    // The SDK logs request bodies (the database password among them) at trace
    // level when this is set. The password is never logged, at any verbosity.
    // SAFETY: nothing else runs yet: no thread can be reading the environment.
    unsafe { std::env::remove_var("LOG_SIGNABLE_BODY") };
    // Usage errors exit 1 like every other error: 2 means "changes" for plan.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    init_logging(cli.global.verbose, cli.global.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!(
                "{} {message}",
                Palette::new(colors_on_stderr()).err("error:")
            );
            ExitCode::from(1)
        }
    }
}

fn colors_on_stderr() -> bool {
    console::colors_enabled_stderr()
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "ihp_infra=info,warn",
        _ => "ihp_infra=debug,info",
    };
    let filter = EnvFilter::try_from_env("IHP_INFRA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default))
        // Request signing logs whole requests at trace level: never that.
        .add_directive("aws_sigv4=debug".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colors_on_stderr()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_stack(cli: &Cli) -> Result<Stack, String> {
    stack::load(&cli.global.stack, &|name| std::env::var(name).ok()).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    // Validation comes first and needs no runtime: no AWS call before the stack is valid.
    let stack = load_stack(&cli)?;
    if let Command::Validate = cli.command {
        println!(
            "{} is valid: stack {} in {} ({}, {})",
            cli.global.stack.display(),
            stack.prefix,
            stack.region,
            stack.az_1,
            stack.az_2
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("failed to start: {e}"))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Validate => unreachable!("handled above"),
            Command::Plan { detailed_exitcode } => {
                let (_, plan) = ihp_infra::plan(&stack, Goal::Converge)
                    .await
                    .map_err(|e| e.to_string())?;
                print!(
                    "{}",
                    render::plan(&plan, &Palette::new(console::colors_enabled()))
                );
                Ok(if detailed_exitcode && plan.has_changes() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                })
            }
            Command::Apply { auto_approve } => execute(&stack, Goal::Converge, auto_approve).await,
            Command::Destroy {
                auto_approve,
                skip_final_snapshot,
                delete_bucket_contents,
            } => {
                let options = aws::DestroyOptions {
                    skip_final_snapshot,
                    delete_bucket_contents,
                };
                execute(&stack, Goal::Destroy(options), auto_approve).await
            }
            Command::Output { json } => {
                let aws = aws::Aws::connect(&stack).await.map_err(|e| e.to_string())?;
                let outputs = aws.outputs(&stack).await.map_err(|e| e.to_string())?;
                if json {
                    println!("{}", outputs.to_json());
                } else {
                    print!("{}", outputs.to_env());
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn execute(stack: &Stack, goal: Goal, auto_approve: bool) -> Result<ExitCode, String> {
    let (aws, plan) = ihp_infra::plan(stack, goal)
        .await
        .map_err(|e| e.to_string())?;
    let colors = console::colors_enabled();
    print!("{}", render::plan(&plan, &Palette::new(colors)));
    let deletes_database = plan
        .changes
        .iter()
        .any(|c| c.address.kind == Kind::Database && c.action == Action::Delete);
    if let Goal::Destroy(options) = goal
        && deletes_database
    {
        if options.skip_final_snapshot {
            println!(
                "\nThe database is deleted WITHOUT a final snapshot (--skip-final-snapshot): its data is lost."
            );
        } else {
            println!(
                "\nThe database keeps a final snapshot; --skip-final-snapshot deletes it without one."
            );
        }
    }
    if !plan.has_changes() {
        if goal == Goal::Converge {
            write_db_info(stack, &aws).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let verb = match goal {
        Goal::Converge => "apply",
        Goal::Destroy(_) => "destroy",
    };
    if !auto_approve {
        confirm(stack, verb)?;
    }
    let started = Instant::now();
    let interactive = std::io::stderr().is_terminal();
    let progress = Arc::new(progress::Progress::new(interactive, colors_on_stderr()));
    eprintln!();
    let heartbeat = tokio::spawn({
        let progress = progress.clone();
        async move {
            let every = Duration::from_secs(30);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                progress.heartbeat(every);
            }
        }
    });
    let aws = Arc::new(aws);
    let outcome = executor::execute(&plan, aws.clone(), &*progress, interrupted()).await;
    heartbeat.abort();
    let code = report(&plan, &outcome, verb, started.elapsed())?;
    if goal == Goal::Converge {
        write_db_info(stack, &aws).await?;
    }
    Ok(code)
}

/// After every successful apply: db_info.txt next to the stack file, and
/// what the NixOS configuration needs.
async fn write_db_info(stack: &Stack, aws: &aws::Aws) -> Result<(), String> {
    let outputs = aws.outputs(stack).await.map_err(|e| e.to_string())?;
    let missing =
        || "the server or the database is missing after apply; run `ihp-infra plan` to see why";
    let (Some(instance_dns), Some(db_endpoint), Some(db_username)) = (
        &outputs.instance_dns,
        &outputs.db_endpoint,
        &outputs.db_username,
    ) else {
        return Err(missing().into());
    };
    let path = db_info::path_for(&stack.path);
    db_info::write(
        &path,
        instance_dns,
        db_endpoint,
        db_username,
        &stack.db_password,
    )
    .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    eprintln!(
        "\nWrote {} (mode 0600; it holds the password). For the NixOS configuration \
         (also `ihp-infra output`):\n{}",
        path.display(),
        outputs.to_env()
    );
    Ok(())
}

/// Resolves on the first Ctrl-C; a second one quits at once. Either way a
/// later run converges: every step is idempotent and tags are set at creation.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        return std::future::pending().await;
    }
    eprintln!("\ninterrupted: letting the steps under way finish; press Ctrl-C again to quit now");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

fn confirm(stack: &Stack, verb: &str) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "refusing to {verb} without confirmation: standard input is not a terminal; \
             review the plan and pass --auto-approve"
        ));
    }
    let answer: String = dialoguer::Input::new()
        .with_prompt(format!(
            "\nDo you want to {verb} these changes to stack {} in {}? Only 'yes' is accepted",
            stack.prefix, stack.region
        ))
        .allow_empty(true)
        .interact_text()
        .map_err(|e| format!("failed to read the confirmation: {e}"))?;
    if answer.trim() != "yes" {
        return Err(format!("{verb} cancelled: nothing was changed"));
    }
    Ok(())
}

fn report(
    plan: &Plan,
    outcome: &Outcome<aws::Error>,
    verb: &str,
    elapsed: std::time::Duration,
) -> Result<ExitCode, String> {
    let p = Palette::new(colors_on_stderr());
    if outcome.succeeded() {
        let s = plan.summary();
        eprintln!(
            "\n{} {verb} complete in {:.1}s: {} created, {} updated, {} replaced, {} deleted.",
            p.ok("✓"),
            elapsed.as_secs_f64(),
            s.create,
            s.update,
            s.replace,
            s.delete
        );
        for note in &outcome.notes {
            eprintln!("  kept: {note}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut message = format!(
        "{verb} did not complete ({} steps done)",
        outcome.done.len()
    );
    for (step, e) in &outcome.failed {
        message.push_str(&format!(
            "\n  failed to {} {}: {e}",
            step.phase.verb(),
            step.address
        ));
    }
    if !outcome.skipped.is_empty() {
        let skipped: Vec<String> = outcome.skipped.iter().map(|s| s.to_string()).collect();
        message.push_str(&format!("\n  not started: {}", skipped.join(", ")));
    }
    if outcome.interrupted {
        message.push_str("\n  interrupted by the user");
    }
    message.push_str(&format!(
        "\n  nothing is lost: run `ihp-infra {verb}` again to finish"
    ));
    Err(message)
}
