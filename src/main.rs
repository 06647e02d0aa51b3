//! The `ihp-infra` binary: parses the command line, asks for confirmation,
//! renders. Every decision is made in the library.

/// `println!` that never panics and never shows a secret: a closed pipe
/// (`ihp-infra plan | head`) only means nobody reads any more, and the run
/// goes on to its end; registered secrets are masked (`redact`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", ihp_infra::redact::redact(&text));
    }};
}

/// `print!` that never panics or shows a secret (see `outln!`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout().lock(), "{}", ihp_infra::redact::redact(&text));
    }};
}

/// `eprintln!` that never panics or shows a secret (see `outln!`).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr().lock(), "{}", ihp_infra::redact::redact(&text));
    }};
}

mod cli;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use clap::CommandFactory;
use cli::{Cli, Command, GraphFormat, LogFormat};
use ihp_infra::adoption::Source;
use ihp_infra::render::{self, Palette};
use ihp_infra::session::Session;
use ihp_infra::stack::{self, Stack};
use ihp_infra::{Goal, aws};

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
    // NO_COLOR wins even over CLICOLOR_FORCE (no-color.org).
    if cli.global.no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        console::set_colors_enabled(false);
        console::set_colors_enabled_stderr(false);
    }
    init_logging(&cli.global);
    // A bug must not show a secret either: the panic message is redacted.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        errln!(
            "ihp-infra crashed (a bug; please report it){place}: {message}\n  \
             nothing is lost: every step is idempotent, run the command again"
        );
    }));
    let result = run(cli);
    let retried = aws::calls::retries();
    if retried > 0 {
        tracing::info!(
            retried,
            "survived faults: AWS calls sent again (or found done) after throttling, server errors or lost connections"
        );
    }
    match result {
        Ok(code) => code,
        Err(message) => {
            errln!(
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

fn init_logging(global: &cli::GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "ihp_infra=info,warn",
        _ => "ihp_infra=debug,info",
    };
    // Set but empty counts as unset (an empty filter would log nothing,
    // not even what -v asks for).
    let filter = std::env::var("IHP_INFRA_LOG")
        .ok()
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
        // Request signing logs whole requests at trace level: never that.
        .add_directive("aws_sigv4=debug".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    match global.log_format {
        LogFormat::Text => builder.with_ansi(colors_on_stderr()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Log lines go to stderr through `redact`: one event is one write.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let _ = std::io::stderr()
            .lock()
            .write_all(ihp_infra::redact::redact(&text).as_bytes());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn load_stack(cli: &Cli, password: stack::Password) -> Result<Stack, String> {
    let stack = stack::load_with(
        &cli.global.stack,
        &|name| std::env::var(name).ok(),
        password,
    )
    .map_err(|e| e.to_string())?;
    ihp_infra::redact::register(stack.db_password.expose());
    Ok(stack)
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    // Commands that need no stack file.
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "ihp-infra", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Schema => {
            out!("{}", stack::SCHEMA);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Init {
            prefix,
            region,
            key_name,
        } => return init(&cli, prefix.clone(), region.clone(), key_name.clone()),
        _ => {}
    }
    // Validation comes first and needs no runtime: no AWS call before the stack is valid.
    let password = match cli.command {
        Command::Output {
            show_secrets: false,
            ..
        }
        | Command::SshConfig { .. } => stack::Password::Unused,
        _ => stack::Password::Needed,
    };
    let stack = load_stack(&cli, password)?;
    let quiet = cli.global.quiet;
    // The stack's region wins over the environment's: say so when they differ.
    for variable in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(region) = std::env::var(variable)
            && !region.is_empty()
            && region != stack.region
        {
            errln!(
                "warning: {variable} is {region}, but {} says region {}: ihp-infra uses the stack's",
                cli.global.stack.display(),
                stack.region
            );
        }
    }
    let settings = aws::Settings {
        profile: cli.global.profile.clone(),
    };
    if let Command::Validate = cli.command {
        if !quiet {
            outln!(
                "{} is valid: stack {} in {} ({}, {}){}",
                cli.global.stack.display(),
                stack.prefix,
                stack.region,
                stack.az_1,
                stack.az_2,
                stack
                    .left_out()
                    .map(|parts| format!(", {parts}"))
                    .unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Plan { replace, .. } | Command::Apply { replace, .. } = &cli.command {
        ihp_infra::check_replacements(&stack, replace)?;
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("failed to start: {e}"))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Validate
            | Command::Completions { .. }
            | Command::Init { .. }
            | Command::Schema => {
                unreachable!("handled above")
            }
            Command::Plan {
                detailed_exitcode,
                json,
                destroy,
                graph,
                replace,
                out,
            } => {
                // A preview of `destroy` with its defaults: what it deletes
                // and what it keeps, the same plan it would show.
                let goal = if destroy {
                    Goal::Destroy(ihp_infra::DestroyOptions::default())
                } else {
                    Goal::Converge
                };
                let (_, plan) =
                    ihp_infra::plan_with_replacements(&stack, goal, &settings, &replace)
                        .await
                        .map_err(explain)?;
                if let Some(path) = &out {
                    save_plan(&stack, &cli.global.stack, &plan, &replace, path).await?;
                }
                if let Some(format) = graph {
                    let format = match format {
                        GraphFormat::Mermaid => ihp_infra::graph::Format::Mermaid,
                        GraphFormat::Dot => ihp_infra::graph::Format::Dot,
                    };
                    out!("{}", ihp_infra::graph::render(&plan, format));
                } else if json {
                    outln!("{}", ihp_infra::json::plan_text(&plan));
                } else {
                    out!(
                        "{}",
                        render::plan(&plan, &Palette::new(console::colors_enabled()))
                    );
                    if destroy {
                        // As `destroy` says it before asking.
                        for note in goal.data_kept(&plan) {
                            outln!("\n{note}");
                        }
                        if let Some(note) = goal.backups_note(&stack) {
                            outln!("\n{note}");
                        }
                    } else if let Some(note) = render::registrar_note(&stack) {
                        outln!("\n{note}");
                    }
                }
                Ok(if detailed_exitcode && plan.has_changes() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                })
            }
            Command::Show => {
                let (_, plan) = ihp_infra::plan(&stack, Goal::Converge, &settings)
                    .await
                    .map_err(explain)?;
                out!(
                    "{}",
                    render::status(&plan, &Palette::new(console::colors_enabled()))
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Apply {
                plan_file,
                auto_approve,
                replace,
                replace_database,
                replace_server,
                lock,
            } => {
                let allow = [
                    (replace_database, "--replace-database"),
                    (replace_server, "--replace-server"),
                ]
                .into_iter()
                .filter_map(|(given, flag)| given.then_some(flag))
                .collect();
                // A saved plan is checked before any AWS call.
                let saved = match &plan_file {
                    Some(path) => Some(load_saved_plan(&stack, &cli.global.stack, path).await?),
                    None => None,
                };
                let replace = saved.as_ref().map_or(replace, |(_, s)| s.replacing());
                let run = Run {
                    stack: &stack,
                    goal: Goal::Converge,
                    auto_approve,
                    replace,
                    saved,
                    allow,
                    quiet,
                    settings: &settings,
                    lock_timeout: lock.lock_timeout,
                };
                execute(run).await
            }
            Command::Destroy {
                auto_approve,
                skip_final_snapshot,
                delete_bucket_contents,
                delete_backups,
                lock,
            } => {
                let options = ihp_infra::DestroyOptions {
                    skip_final_snapshot,
                    delete_bucket_contents,
                    delete_backups,
                };
                let run = Run {
                    stack: &stack,
                    goal: Goal::Destroy(options),
                    auto_approve,
                    replace: vec![],
                    saved: None,
                    allow: vec![],
                    quiet,
                    settings: &settings,
                    lock_timeout: lock.lock_timeout,
                };
                execute(run).await
            }
            Command::Adopt {
                from_terraform,
                instance,
                database,
                auto_approve,
                lock,
            } => {
                let source = match (from_terraform, instance, database) {
                    (Some(path), _, _) => Source::Terraform(path),
                    (None, None, None) => Source::Tags,
                    (None, instance, database) => Source::Named { instance, database },
                };
                adopt(
                    &stack,
                    &settings,
                    &source,
                    auto_approve,
                    quiet,
                    lock.lock_timeout,
                )
                .await
            }
            Command::Unlock { force } => unlock(&stack, &settings, force).await,
            Command::SshConfig {
                install,
                auto_approve,
                port,
            } => ssh_config(&stack, &settings, install, auto_approve, port).await,
            Command::Output {
                name,
                json,
                show_secrets,
            } => {
                if let Some(name) = &name
                    && !ihp_infra::outputs::Outputs::NAMES.contains(&name.as_str())
                {
                    // Before any AWS call: a typo needs no credentials.
                    return Err(
                        ihp_infra::outputs::UnknownOutput { name: name.clone() }.to_string()
                    );
                }
                let outputs = ihp_infra::session::outputs(&stack, &settings)
                    .await
                    .map_err(explain)?;
                let password = show_secrets.then_some(&stack.db_password);
                let text = if let Some(name) = &name {
                    match outputs.value(name, password).map_err(|e| e.to_string())? {
                        Some(value) => format!("{value}\n"),
                        None => {
                            return Err(format!(
                                "{name} has no value: the stack has no {} (yet)",
                                if name.starts_with("DB") || name == "DATABASE_URL" {
                                    "database"
                                } else if name == "S3_ACCESS_KEY_FILE" {
                                    "key file (storage.key_file)"
                                } else {
                                    "running server"
                                }
                            ));
                        }
                    }
                } else if json {
                    format!("{}\n", outputs.to_json(password))
                } else {
                    outputs.to_text(password)
                };
                if show_secrets {
                    // Asked for: the one place the password is printed, unmasked.
                    use std::io::Write as _;
                    let _ = std::io::stdout().lock().write_all(text.as_bytes());
                } else {
                    out!("{text}");
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// `ihp-infra ssh-config`: the entry, the pinned keys, and (asked) the
/// Include line in ~/.ssh/config.
async fn ssh_config(
    stack: &Stack,
    settings: &ihp_infra::aws::Settings,
    install: bool,
    auto_approve: bool,
    port: u16,
) -> Result<ExitCode, String> {
    use ihp_infra::ssh_config;
    let written = ssh_config::write(stack, settings, port)
        .await
        .map_err(explain)?;
    errln!("Wrote {} (Host {})", written.config.display(), written.host);
    if written.pinned.is_empty() {
        errln!(
            "The server's host key fingerprints are not on its console yet (NixOS prints them at boot; \
             EC2 shows the console minutes later): no key is trusted, so ssh refuses to connect. \
             Run `ihp-infra ssh-config` again in a few minutes."
        );
    } else {
        for key in &written.pinned {
            errln!("  pinned {key} (its fingerprint is on the server's console)");
        }
    }
    if install {
        let config = ssh_config::user_config().map_err(explain)?;
        let line = ihp_infra::ssh::include_line(ssh_config::DIR);
        let question = format!("Add `{line}` at the top of {}?", config.display());
        if !auto_approve {
            if !std::io::stdin().is_terminal() {
                return Err(format!(
                    "{question} Not asked: standard input is not a terminal; pass --auto-approve"
                ));
            }
            let yes = dialoguer::Confirm::new()
                .with_prompt(question)
                .default(false)
                .interact()
                .map_err(|e| e.to_string())?;
            if !yes {
                errln!("{} left as it is.", config.display());
                return Ok(ExitCode::SUCCESS);
            }
        }
        if ssh_config::install_include().map_err(explain)? {
            errln!("Added `{line}` to {}.", config.display());
        } else {
            errln!("{} already includes the entries.", config.display());
        }
    }
    out!("ssh {}\n", written.host);
    Ok(ExitCode::SUCCESS)
}

/// `ihp-infra init`: the answers come from flags, or from prompts on a terminal.
fn init(
    cli: &Cli,
    prefix: Option<String>,
    region: Option<String>,
    key_name: Option<String>,
) -> Result<ExitCode, String> {
    let path = &cli.global.stack;
    if path.exists() {
        return Err(ihp_infra::init::InitError::Exists {
            path: path.display().to_string(),
        }
        .to_string());
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let ask = |value: Option<String>, flag: &str, prompt: &str, default: Option<&str>| {
        if let Some(value) = value {
            return Ok(value);
        }
        if !interactive {
            return Err(format!(
                "{flag} is needed: standard input is not a terminal to ask on \
                 (e.g. ihp-infra init --prefix my-app --region eu-central-1 --key-name my-key)"
            ));
        }
        let mut input = dialoguer::Input::<String>::new().with_prompt(prompt);
        if let Some(default) = default {
            input = input.default(default.to_string());
        }
        input
            .interact_text()
            .map_err(|e| format!("failed to read {flag}: {e}"))
    };
    let prefix = ask(
        prefix,
        "--prefix",
        "Prefix (names every resource; lower-case letters, digits, hyphens)",
        None,
    )?;
    let region = ask(region, "--region", "AWS region", Some("eu-central-1"))?;
    let key_name = ask(
        key_name,
        "--key-name",
        "EC2 key pair for SSH (must exist in the region)",
        None,
    )?;
    ihp_infra::init::check(&prefix, &region, &key_name).map_err(|e| e.to_string())?;
    ihp_infra::init::write(
        path,
        &ihp_infra::init::stack_file(&prefix, &region, &key_name),
    )
    .map_err(|e| e.to_string())?;
    if !cli.global.quiet {
        errln!(
            "Wrote {}. Next: export IHP_INFRA_DB_PASSWORD='...' (8+ characters), \
             then `ihp-infra plan`.",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An apply or a destroy, as asked for.
struct Run<'a> {
    stack: &'a Stack,
    goal: Goal,
    auto_approve: bool,
    /// --replace: resources replaced on purpose.
    replace: Vec<ihp_infra::model::Address>,
    /// `apply FILE`: the saved plan, and the file's path.
    saved: Option<(std::path::PathBuf, ihp_infra::saved::SavedPlan)>,
    /// --replace-database, --replace-server: see `Plan::risks`.
    allow: Vec<&'static str>,
    quiet: bool,
    settings: &'a aws::Settings,
    lock_timeout: Duration,
}

impl Run<'_> {
    fn verb(&self) -> &'static str {
        match self.goal {
            Goal::Converge => "apply",
            Goal::Destroy(_) => "destroy",
        }
    }
}

/// Takes the stack's lock, runs, and releases the lock however the run
/// ends (an error, a refusal, Ctrl-C).
async fn execute(run: Run<'_>) -> Result<ExitCode, String> {
    let session = Session::open(
        run.stack,
        run.settings,
        run.goal,
        run.verb(),
        run.lock_timeout,
    )
    .await
    .map_err(explain)?;
    let interrupts = Interrupts::listen(session.lock());
    let result = execute_locked(&run, &session, &interrupts).await;
    if let Err(e) = session.close().await {
        errln!(
            "{} {e}\n  break it with `ihp-infra unlock`",
            Palette::new(colors_on_stderr()).err("warning:")
        );
    }
    result
}

async fn execute_locked(
    run: &Run<'_>,
    session: &Session,
    interrupts: &Interrupts,
) -> Result<ExitCode, String> {
    let (stack, goal, quiet) = (run.stack, run.goal, run.quiet);
    let plan = session.plan(stack, &run.replace).await.map_err(explain)?;
    let colors = console::colors_enabled();
    // Quiet skips the plan only when nobody is asked to confirm it.
    if !(quiet && run.auto_approve) {
        out!("{}", render::plan(&plan, &Palette::new(colors)));
    }
    if !quiet {
        for note in goal.data_kept(&plan) {
            outln!("\n{note}");
        }
        if let Some(note) = goal.backups_note(stack) {
            outln!("\n{note}");
        }
        if goal == Goal::Converge
            && let Some(note) = render::registrar_note(stack)
        {
            outln!("\n{note}");
        }
    }
    plan.allowed(&run.allow)
        .map_err(|e| explain(ihp_infra::Error::from(e)))?;
    if let Some((path, saved)) = &run.saved {
        let now = serde_json::to_value(ihp_infra::json::plan(&plan)).unwrap_or_default();
        let moved = ihp_infra::saved::moved(&saved.plan, &now);
        if !moved.is_empty() {
            return Err(format!(
                "{} is no longer the plan; nothing was changed:\n  - {}\n  run `ihp-infra plan --out {}` again and review it",
                path.display(),
                moved.join("\n  - "),
                path.display()
            ));
        }
    }
    if !plan.has_changes() {
        if goal == Goal::Converge {
            write_db_info(stack, session, quiet).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let verb = run.verb();
    // A saved plan was the review: it is applied as it is, without asking.
    if !run.auto_approve && run.saved.is_none() {
        confirm(stack, verb)?;
    }
    let started = Instant::now();
    let display = match (quiet, std::io::stderr().is_terminal()) {
        (true, _) => progress::Display::Quiet,
        (false, true) => progress::Display::Live,
        (false, false) => progress::Display::Lines,
    };
    let progress = Arc::new(progress::Progress::new(display, colors_on_stderr()));
    if !quiet {
        errln!("");
    }
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
    interrupts.executing();
    let outcome = session.execute(&plan, &*progress, interrupts.first()).await;
    heartbeat.abort();
    let code = match render::outcome(
        &plan,
        &outcome,
        verb,
        started.elapsed(),
        &Palette::new(colors_on_stderr()),
        ihp_infra::Error::hint,
    ) {
        Ok(_) if quiet => ExitCode::SUCCESS,
        Ok(done) => {
            errln!("{done}");
            ExitCode::SUCCESS
        }
        Err(failed) => return Err(failed),
    };
    if goal == Goal::Converge {
        write_db_info(stack, session, quiet).await?;
    }
    session.log_critical_path(&plan);
    Ok(code)
}

/// After every successful apply: db_info.txt next to the stack file, and
/// what the NixOS configuration needs.
async fn write_db_info(stack: &Stack, session: &Session, quiet: bool) -> Result<(), String> {
    let (path, outputs) = session.write_db_info(stack).await.map_err(explain)?;
    let module = session.write_module(stack, &outputs).map_err(explain)?;
    if let Some(config) = module.as_ref().and_then(|m| m.app_with_postgres.as_ref()) {
        // Even when quiet: the app would run against the wrong database.
        errln!(
            "warning: {} imports IHP's appWithPostgres, which runs a Postgres of its own on the server; \
             with RDS import ihp.nixosModules.app instead",
            config.display()
        );
    }
    if quiet {
        return Ok(());
    }
    if let Some(module) = &module {
        errln!(
            "\n{} {} (no secret in it; import it once from configuration.nix: imports = [ ./{} ];)",
            if module.changed {
                "Wrote"
            } else {
                "Unchanged:"
            },
            module.path.display(),
            ihp_infra::nixos::FILE_NAME
        );
    }
    let Some(path) = path else {
        errln!(
            "\nFor the NixOS configuration (`ihp-infra output` shows these again, with SSH settings):\n{}",
            outputs.to_env()
        );
        return Ok(());
    };
    errln!(
        "\nWrote {} (mode 0600; it holds the password). For the NixOS configuration \
         (`ihp-infra output` shows these again, with SSH settings):\n{}",
        path.display(),
        outputs.to_env()
    );
    Ok(())
}

/// The error, and what to do next when AWS's error code says.
fn explain(e: impl Into<ihp_infra::Error>) -> String {
    let e = e.into();
    match e.hint() {
        Some(hint) => format!("{e}\n  hint: {hint}"),
        None => e.to_string(),
    }
}

/// Ctrl-C while the lock is held. Before any change is made, the first one
/// releases the lock and quits. Once changes are under way, the first one
/// starts no new step and lets those under way finish (the run then ends
/// normally, releasing the lock); a second one releases the lock and quits
/// at once. Either way a later run converges: every step is idempotent and
/// tags are set at creation.
struct Interrupts {
    pressed: tokio::sync::watch::Receiver<u32>,
    executing: Arc<std::sync::atomic::AtomicBool>,
}

impl Interrupts {
    fn listen(lock: aws::lock::Lock) -> Interrupts {
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        let executing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = executing.clone();
        tokio::spawn(async move {
            let mut count = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                count += 1;
                if count == 1 && started.load(std::sync::atomic::Ordering::SeqCst) {
                    errln!(
                        "\ninterrupted: letting the steps under way finish; press Ctrl-C again to quit now"
                    );
                    let _ = tx.send(count);
                    continue;
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), lock.release()).await;
                if count == 1 {
                    errln!("\ninterrupted: nothing was changed");
                } else {
                    errln!("\nquit: run the command again to finish");
                }
                std::process::exit(130);
            }
        });
        Interrupts {
            pressed: rx,
            executing,
        }
    }

    /// From now on the first Ctrl-C stops gracefully.
    fn executing(&self) {
        self.executing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Resolves on the first Ctrl-C during execution.
    fn first(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut pressed = self.pressed.clone();
        async move {
            if pressed.wait_for(|n| *n >= 1).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// `ihp-infra unlock`: breaks a lock a killed run left behind.
async fn unlock(stack: &Stack, settings: &aws::Settings, force: bool) -> Result<ExitCode, String> {
    let lock = ihp_infra::session::StackLock::connect(stack, settings)
        .await
        .map_err(explain)?;
    let Some(taken) = lock.taken().await.map_err(explain)? else {
        errln!("stack {} is not locked", stack.prefix);
        return Ok(ExitCode::SUCCESS);
    };
    let holder = taken
        .holder
        .as_ref()
        .map_or("an unknown run".to_string(), |h| h.describe());
    let since = taken.since.as_deref().unwrap_or("(unknown)");
    errln!("stack {} is locked by {holder} since {since}", stack.prefix);
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err(
                "refusing to break the lock without confirmation: standard input is not a \
                 terminal; make sure that run is gone, then pass --force"
                    .into(),
            );
        }
        let answer: String = dialoguer::Input::new()
            .with_prompt(
                "Break it? Only if that run is gone: two runs at once can leave duplicates. Only 'yes' is accepted",
            )
            .allow_empty(true)
            .interact_text()
            .map_err(|e| format!("failed to read the confirmation: {e}"))?;
        if answer.trim() != "yes" {
            return Err("unlock cancelled: the lock is still held".into());
        }
    }
    lock.break_lock().await.map_err(explain)?;
    errln!("lock of stack {} broken", stack.prefix);
    Ok(ExitCode::SUCCESS)
}

/// `plan --out FILE`: the plan, with what `apply FILE` checks it against.
async fn save_plan(
    stack: &Stack,
    stack_path: &std::path::Path,
    plan: &ihp_infra::plan::Plan,
    replace: &[ihp_infra::model::Address],
    path: &std::path::Path,
) -> Result<(), String> {
    let bytes = std::fs::read(stack_path)
        .map_err(|e| format!("failed to read {}: {e}", stack_path.display()))?;
    let password_hash = match stack.database {
        Some(_) => {
            let password = stack.db_password.clone();
            Some(
                tokio::task::spawn_blocking(move || ihp_infra::password::hash(password.expose()))
                    .await
                    .map_err(|e| format!("failed to hash the password: {e}"))?,
            )
        }
        None => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let saved = ihp_infra::saved::SavedPlan::new(plan, stack, &bytes, replace, password_hash, now);
    ihp_infra::db_info::write_private(path, &saved.to_text())
        .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    errln!(
        "Saved the plan to {}: `ihp-infra apply {}` carries it out if it is still the plan (within 24 hours).",
        path.display(),
        path.display()
    );
    Ok(())
}

/// `apply FILE`: the saved plan, if it may still be applied to `stack`.
async fn load_saved_plan(
    stack: &Stack,
    stack_path: &std::path::Path,
    path: &std::path::Path,
) -> Result<(std::path::PathBuf, ihp_infra::saved::SavedPlan), String> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("failed to read {shown}: {e}"))?;
    let saved = ihp_infra::saved::SavedPlan::parse(&shown, &text).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(stack_path)
        .map_err(|e| format!("failed to read {}: {e}", stack_path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    saved
        .check(&shown, stack, &bytes, now)
        .map_err(|e| e.to_string())?;
    let (stack_copy, saved) = (stack.clone(), saved);
    let (matches, saved) =
        tokio::task::spawn_blocking(move || (saved.password_matches(&stack_copy), saved))
            .await
            .map_err(|e| format!("failed to check the password: {e}"))?;
    if !matches {
        return Err(ihp_infra::saved::SavedPlanError::PasswordChanged { path: shown }.to_string());
    }
    Ok((path.to_path_buf(), saved))
}

/// `ihp-infra adopt`, under the stack's lock.
async fn adopt(
    stack: &Stack,
    settings: &aws::Settings,
    source: &Source,
    auto_approve: bool,
    quiet: bool,
    lock_timeout: Duration,
) -> Result<ExitCode, String> {
    let session = Session::open(stack, settings, Goal::Converge, "adopt", lock_timeout)
        .await
        .map_err(explain)?;
    // Ctrl-C releases the lock and quits; tags written so far are kept,
    // and the next adopt writes the rest.
    let _interrupts = Interrupts::listen(session.lock());
    let result = adopt_locked(stack, &session, source, auto_approve, quiet).await;
    if let Err(e) = session.close().await {
        errln!(
            "{} {e}
  break it with `ihp-infra unlock`",
            Palette::new(colors_on_stderr()).err("warning:")
        );
    }
    result
}

async fn adopt_locked(
    stack: &Stack,
    session: &Session,
    source: &Source,
    auto_approve: bool,
    quiet: bool,
) -> Result<ExitCode, String> {
    let adoption = ihp_infra::adoption::prepare(session.aws(), stack, source, &|name| {
        std::env::var(name).ok()
    })
    .await
    .map_err(explain)?;
    if adoption.nothing_to_do() {
        errln!(
            "stack {} is adopted already: nothing to do (`ihp-infra plan` shows what apply would change)",
            stack.prefix
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !(quiet && auto_approve) {
        out!("{}", adoption.render());
        outln!(
            "
Then `ihp-infra apply` makes these changes:
"
        );
        out!(
            "{}",
            render::plan(&adoption.plan, &Palette::new(console::colors_enabled()))
        );
    }
    if let Err(e) = adoption.plan.allowed(&[]) {
        errln!(
            "{} {}",
            Palette::new(colors_on_stderr()).err("warning:"),
            explain(ihp_infra::Error::from(e))
        );
    }
    if !auto_approve {
        confirm_with(
            &format!(
                "\nDo you want to adopt these resources into stack {} in {}{}? Only 'yes' is accepted",
                stack.prefix,
                stack.region,
                if adoption.stack_text.is_some() {
                    format!(" and write the settings into {}", stack.path.display())
                } else {
                    String::new()
                }
            ),
            "adopt",
        )?;
    }
    adoption.carry_out(session.aws()).await.map_err(explain)?;
    // What bench/adopt.sh reports (the lock's release is one more call).
    tracing::info!(
        calls = ihp_infra::aws::calls::calls() + 1,
        taken_over = adoption.takeovers.len(),
        "adopted"
    );
    if !quiet {
        errln!(
            "\nAdopted {} resources into stack {}{}. Next: `ihp-infra apply`; then retire the Terraform folder (docs/adopting-terraform.md, step 5).",
            adoption.takeovers.len(),
            stack.prefix,
            if adoption.stack_text.is_some() {
                format!("; settings written to {}", stack.path.display())
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn confirm(stack: &Stack, verb: &str) -> Result<(), String> {
    confirm_with(
        &format!(
            "\nDo you want to {verb} these changes to stack {} in {}? Only 'yes' is accepted",
            stack.prefix, stack.region
        ),
        verb,
    )
}

fn confirm_with(prompt: &str, verb: &str) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "refusing to {verb} without confirmation: standard input is not a terminal; \
             review the plan and pass --auto-approve"
        ));
    }
    let answer: String = dialoguer::Input::new()
        .with_prompt(prompt)
        .allow_empty(true)
        .interact_text()
        .map_err(|e| format!("failed to read the confirmation: {e}"))?;
    if answer.trim() != "yes" {
        return Err(format!("{verb} cancelled: nothing was changed"));
    }
    Ok(())
}
