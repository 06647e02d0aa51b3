//! What users see: plans for every kind of change, the JSON plan's shape,
//! outputs, init, completions, colours, verbosity, and the password never
//! shown anywhere unless asked for.

use std::collections::BTreeSet;
use std::process::Stdio;

use crate::common::{
    Emulator, FULL_STACK, KEY_NAME, Needs, Output, PASSWORD, Project, id_filters, stack_yaml,
};
use crate::network::tagged;

const REGION: &str = "eu-central-1";

#[tokio::test]
async fn plan_outputs_for_delete_and_no_change() {
    // Create, update and replace are snapshotted in network.rs and server.rs.
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("shown", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);

    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 0);
    assert_eq!(
        plan.stdout,
        format!(
            "No changes. Stack shown in eu-central-1 matches its file ({} resources).\n",
            emulator.stack_size()
        )
    );

    // Without a terminal destroy shows its plan, then refuses.
    let destroy = p.run_ok(&["destroy"], 1);
    insta::with_settings!({ filters => id_filters() }, {
        insta::assert_snapshot!(emulator.snapshot("plan_destroy"), destroy.stdout);
    });
    assert!(
        destroy.stderr.contains("refusing to destroy"),
        "{destroy:?}"
    );
    // The same plan, previewed without a question; JSON too.
    let preview = p.run_ok(&["plan", "--destroy", "--detailed-exitcode"], 2);
    assert_eq!(preview.stdout, destroy.stdout);
    let json = p.run_ok(&["plan", "--destroy", "--json"], 0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["summary"]["destroy"], emulator.stack_size());
    assert_eq!(doc["summary"]["add"], 0);
    assert_eq!(
        tagged(&emulator, "shown").await.len(),
        emulator.stack_size()
    );
}

/// The keys docs/plan-json.md documents for `plan --json`, at each level.
const DOCUMENT_KEYS: &[&str] = &[
    "format_version",
    "stack",
    "region",
    "has_changes",
    "apply_needs",
    "summary",
    "resources",
];
const SUMMARY_KEYS: &[&str] = &["add", "change", "replace", "destroy", "unchanged"];
const RESOURCE_KEYS: &[&str] = &[
    "address",
    "kind",
    "role",
    "name",
    "id",
    "action",
    "depends_on",
    "data_on_delete",
    "changes",
];
const DATA_ON_DELETE: &[&str] = &[
    "final_snapshot",
    "disk_snapshot",
    "lost",
    "refuse_if_not_empty",
    "empty_first",
];
const ATTRIBUTE_KEYS: &[&str] = &[
    "name",
    "before",
    "after",
    "after_unknown",
    "sensitive",
    "forces_replacement",
];
const ACTIONS: &[&str] = &["create", "update", "replace", "delete", "no-op"];

fn keys(value: &serde_json::Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn expect_keys(value: &serde_json::Value, expected: &[&str]) {
    assert_eq!(
        keys(value),
        expected.iter().copied().collect(),
        "in {value:#}"
    );
}

/// Checks a JSON plan against the shape docs/plan-json.md documents.
fn check_plan_document(doc: &serde_json::Value) {
    expect_keys(doc, DOCUMENT_KEYS);
    assert_eq!(doc["format_version"], "1.0");
    assert!(doc["stack"].is_string() && doc["region"].is_string());
    assert!(doc["has_changes"].is_boolean());
    assert!(doc["apply_needs"].is_array());
    expect_keys(&doc["summary"], SUMMARY_KEYS);
    for key in SUMMARY_KEYS {
        assert!(doc["summary"][key].is_u64(), "summary.{key}");
    }
    let resources = doc["resources"].as_array().expect("resources is an array");
    let mut counted = 0;
    for r in resources {
        expect_keys(r, RESOURCE_KEYS);
        let action = r["action"].as_str().expect("action is a string");
        assert!(ACTIONS.contains(&action), "{action}");
        if action != "no-op" {
            counted += 1;
        }
        assert_eq!(
            r["address"].as_str().unwrap(),
            format!(
                "{}.{}",
                r["kind"].as_str().unwrap(),
                r["role"].as_str().unwrap()
            )
        );
        assert!(r["name"].is_string());
        assert!(r["id"].is_string() || (r["id"].is_null() && action == "create"));
        // Said only of what goes, and then one of the documented words.
        match r["data_on_delete"].as_str() {
            Some(data) => {
                assert!(DATA_ON_DELETE.contains(&data), "{data}");
                assert!(["delete", "replace"].contains(&action), "{r}");
            }
            None => assert!(r["data_on_delete"].is_null(), "{r}"),
        }
        assert!(
            r["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d.is_string())
        );
        for a in r["changes"].as_array().expect("changes is an array") {
            expect_keys(a, ATTRIBUTE_KEYS);
            assert!(a["name"].is_string());
            for flag in ["after_unknown", "sensitive", "forces_replacement"] {
                assert!(a[flag].is_boolean(), "{flag} in {a}");
            }
            if a["sensitive"] == true {
                assert!(a["before"].is_null() && a["after"].is_null(), "{a}");
            }
            if a["after_unknown"] == true {
                assert!(a["after"].is_null() || a["after"].is_array(), "{a}");
            }
        }
    }
    let s = &doc["summary"];
    let sum: u64 = ["add", "change", "replace", "destroy"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, counted);
    assert_eq!(doc["has_changes"], counted > 0);
}

#[tokio::test]
async fn plan_json_has_the_documented_shape_and_detailed_exit_codes() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("js", REGION);

    // Terraform's convention: 0 whatever the plan, unless asked for 2.
    let out = p.run_ok(&["plan", "--json"], 0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(doc["has_changes"], true);
    let out = p.run_ok(&["plan", "--json", "--detailed-exitcode"], 2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    check_plan_document(&doc);
    assert_eq!(doc["summary"]["add"], emulator.stack_size());
    let db = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "database");
    if emulator.serves_whole_stack() {
        assert!(
            db.unwrap()["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["name"] == "password" && a["sensitive"] == true)
        );
    } else {
        assert_eq!(db, None);
    }

    p.run_ok(&["apply", "--auto-approve"], 0);
    let out = p.run_ok(&["plan", "--json", "--detailed-exitcode"], 0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    check_plan_document(&doc);
    assert_eq!(doc["has_changes"], false);

    // A change on the live side: one update, in the document.
    p.write(
        "stack.yaml",
        &format!(
            "{}logs:\n  retention_days: 90\n",
            emulator.stack_yaml("js", REGION)
        ),
    );
    let out = p.run_ok(&["plan", "--json", "--detailed-exitcode"], 2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    check_plan_document(&doc);
    let update = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "update")
        .expect("an update");
    assert_eq!(update["kind"], "log_group");
    assert_eq!(update["changes"][0]["before"], 30);
    assert_eq!(update["changes"][0]["after"], 90);

    // A renamed bucket: the old one goes, and the plan says its files stop it.
    p.write(
        "stack.yaml",
        &format!(
            "{}storage:\n  bucket: js-other-files\n",
            emulator.stack_yaml("js", REGION)
        ),
    );
    let out = p.run_ok(&["plan", "--json", "--detailed-exitcode"], 2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    check_plan_document(&doc);
    let old = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "bucket" && r["action"] == "delete");
    if emulator.has(Needs::BucketsByTag) {
        let old = old.expect("the old bucket goes");
        assert_eq!(old["data_on_delete"], "refuse_if_not_empty", "{old}");
    }

    // Errors go to stderr; stdout stays empty, not half a document.
    p.write("stack.yaml", "prefix: js\n");
    let out = p.run(&["plan", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test]
async fn every_command_at_every_verbosity_never_shows_the_password() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    // Every character RDS allows that some encoder leaves alone (`- . _ ~`)
    // or changes (`! ' * ( ) % $ #`). Its letters and digits survive every
    // encoding, so finding them anywhere is a leak in whatever form.
    const SPECIAL: &str = "Kx7-Hush._~!'*()%$#Mq4vT9w2";
    const SURVIVES_ENCODING: &str = "Mq4vT9w2";
    let p = Project::new(&emulator.endpoint());
    p.write(
        "stack.yaml",
        &stack_yaml("hush", REGION).replace(crate::common::PASSWORD, SPECIAL),
    );
    // (arguments, IHP_INFRA_LOG): the last one is the SDK's own trace log.
    let verbosities: [(&[&str], &str); 6] = [
        (&["-q"], ""),
        (&[], ""),
        (&["-v"], ""),
        (&["-vv"], ""),
        (&["-vv", "--log-format", "json"], ""),
        (&["-vv"], "trace"),
    ];
    for (verbosity, log) in verbosities {
        for command in [
            &["validate"][..],
            &["plan"],
            &["plan", "--json"],
            &["apply", "--auto-approve"],
            &["plan"],
            &["output"],
            &["output", "--json"],
            &["destroy", "--auto-approve"],
        ] {
            let args = [command, verbosity].concat();
            let out: Output = p
                .command(&args)
                .env("IHP_INFRA_LOG", log)
                .output()
                .unwrap()
                .into();
            assert!([0, 2].contains(&out.code), "ihp-infra {args:?}: {out:?}");
            // Never the output itself in the message: it would hold the leak.
            assert!(
                !out.all().contains(SURVIVES_ENCODING),
                "ihp-infra {args:?} (IHP_INFRA_LOG={log:?}) showed the password in some form, at {:?}",
                out.all().find(SURVIVES_ENCODING)
            );
            assert!(!out.all().contains("panicked"), "{out:?}");
            if verbosity == ["-q"] && command[0] == "apply" {
                // "Prints nothing": neither the plan nor the progress.
                assert_eq!(out.stderr, "", "quiet apply: {out:?}");
                assert_eq!(out.stdout, "", "quiet apply: {out:?}");
            }
            if verbosity.contains(&"-v") && command[0] == "apply" {
                assert!(
                    out.stderr.contains("operation=\"RunInstances\"")
                        || out.stderr.contains("\"operation\":\"RunInstances\""),
                    "-v logs every AWS call: {out:?}"
                );
            }
        }
    }
    // Only when asked, percent-encoded where a URL's user info needs it.
    p.run_ok(&["apply", "--auto-approve", "-q"], 0);
    let out = p.run(&["output", "--show-secrets"]);
    assert_eq!(out.code, 0, "{out:?}");
    let url = out
        .stdout
        .lines()
        .find(|l| l.starts_with("DATABASE_URL="))
        .expect("a DATABASE_URL line");
    assert!(
        url.contains("postgres_user:Kx7-Hush._~!'*()%25$%23Mq4vT9w2@"),
        "{url}"
    );
}

#[tokio::test]
async fn output_hands_over_ssh_and_database_url_without_the_password_variable() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    let stack =
        stack_yaml("hand", REGION).replace(&format!("\"{PASSWORD}\""), "{ env: HAND_DB_PASSWORD }");
    p.write("stack.yaml", &stack);
    let out = p
        .command(&["apply", "--auto-approve", "-q"])
        .env("HAND_DB_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // The password variable is not set: output needs it only for --show-secrets.
    let out = p.run_ok(&["output"], 0);
    let dns = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("INSTANCE_URL="))
        .expect("INSTANCE_URL")
        .to_string();
    assert!(
        out.stdout.contains(&format!("\n# ssh root@{dns}\n")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "# Host production\n#     HostName {dns}\n#     User root\n"
        )),
        "{out:?}"
    );
    // Safe to eval: the variables, and nothing runs.
    let eval = std::process::Command::new("bash")
        .arg("-c")
        .arg("set -eu; eval \"$1\"; printf '%s %s' \"$INSTANCE_URL\" \"$S3_BUCKET\"")
        .arg("bash")
        .arg(&out.stdout)
        .output()
        .unwrap();
    assert!(eval.status.success(), "{eval:?}");
    assert_eq!(
        String::from_utf8_lossy(&eval.stdout),
        format!("{dns} hand-storage")
    );

    // One value, raw; a name that isn't one is refused before any call.
    let ip = p.run_ok(&["output", "INSTANCE_IP"], 0);
    assert!(
        out.stdout.contains(&format!("INSTANCE_IP={}", ip.stdout)),
        "{ip:?}"
    );
    assert_eq!(ip.stdout.lines().count(), 1);
    let wrong = p.run_at("http://127.0.0.1:9", &["output", "INSTANCE_PI"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("there is no output INSTANCE_PI; the outputs are INSTANCE_URL, INSTANCE_IP,"),
        "{wrong:?}"
    );
    let file = p.run(&["output", "S3_ACCESS_KEY_FILE"]);
    assert_eq!(file.code, 1, "{file:?}");
    assert!(
        file.stderr.contains("S3_ACCESS_KEY_FILE has no value"),
        "{file:?}"
    );

    // The stack's region wins over the environment's, and says so.
    let warned = p
        .command(&["output", "S3_BUCKET"])
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&warned.stderr).contains(
            "warning: AWS_REGION is us-east-1, but stack.yaml says region eu-central-1: ihp-infra uses the stack's"
        ),
        "{warned:?}"
    );
    assert_eq!(String::from_utf8_lossy(&warned.stdout), "hand-storage\n");
    assert!(out.stdout.contains("INSTANCE_IP="), "{out:?}");
    assert!(
        out.stdout
            .contains("DATABASE_URL=postgres://postgres_user:********@hand-postgres-db."),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("IdentityFile ~/.ssh/{KEY_NAME}.pem"))
    );

    let out = p.run(&["output", "--show-secrets"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("HAND_DB_PASSWORD is not set"),
        "{out:?}"
    );

    let out = p.run_ok(&["output", "--json"], 0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["ssh"], format!("ssh root@{dns}"));
    assert_eq!(json["region"], REGION);
    assert_eq!(json["bucket"], "hand-storage");
    assert_eq!(json["log_group"], "/ihp/hand");
    assert!(json["instance_ip"].is_string());
    assert!(
        json["database_url"]
            .as_str()
            .unwrap()
            .contains(":********@")
    );
}

#[test]
fn init_writes_a_valid_stack_file_and_never_overwrites_one() {
    let p = Project::new("http://127.0.0.1:9");
    // No terminal to ask on: the flags are needed, and named.
    let out = p.run(&["init"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--prefix is needed"), "{out:?}");
    assert!(!p.dir.path().join("stack.yaml").exists());

    let out = p.run(&[
        "init",
        "--prefix",
        "Bad_Prefix",
        "--region",
        "eu-central-1",
        "--key-name",
        "k",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("prefix \"Bad_Prefix\""), "{out:?}");

    let args = [
        "init",
        "--prefix",
        "fresh",
        "--region",
        "us-west-2",
        "--key-name",
        "laptop",
    ];
    p.run_ok(&args, 0);
    let text = std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap();
    assert!(text.contains("prefix: fresh\n") && text.contains("az_2: us-west-2b\n"));
    assert!(text.contains("db_password: { env: IHP_INFRA_DB_PASSWORD }"));
    let out = p
        .command(&["validate"])
        .env("IHP_INFRA_DB_PASSWORD", "long-enough-pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = p.run(&args);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("already exists"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap(),
        text
    );
}

#[test]
fn completions_for_every_shell_clap_complete_knows() {
    let p = Project::new("http://127.0.0.1:9");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = p.run_ok(&["completions", shell], 0);
        assert!(out.stdout.contains("ihp-infra"), "{shell}: {out:?}");
        // fish names long flags without their dashes.
        for word in ["destroy", "auto-approve", "skip-final-snapshot", "stack"] {
            assert!(out.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    let out = p.run(&["completions", "tcsh"]);
    assert_eq!(out.code, 1, "{out:?}");
}

#[tokio::test]
async fn colours_only_when_wanted() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("hue", REGION);
    // The plan text, from a run that succeeded and printed one: an empty
    // output would have no colours either.
    let plan = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = p.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{args:?} {env:?}: {stdout}");
        assert!(stdout.contains("vpc.vpc"), "{args:?} {env:?}: {stdout}");
        stdout
    };
    // Piped: none.
    assert!(!plan(&["plan"], &[]).contains('\x1b'));
    // Forced as on a terminal: colours...
    assert!(plan(&["plan"], &[("CLICOLOR_FORCE", "1")]).contains("\x1b["));
    // ...unless the user says no.
    assert!(!plan(&["plan", "--no-color"], &[("CLICOLOR_FORCE", "1")]).contains('\x1b'));
    assert!(!plan(&["plan"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
}

#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    // Regression: `ihp-infra completions bash | head -1` (and plan | head)
    // panicked with "failed printing to stdout: Broken pipe".
    let p = Project::new("http://127.0.0.1:9");
    for _ in 0..5 {
        let mut child = p
            .command(&["completions", "bash"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
}

/// Runs apply slowed to 150 ms a call, sends it `presses` Ctrl-Cs (100 ms
/// apart) once the first resource is made; returns its exit code and stderr.
/// Holds every request that reaches the proxy while it is closed: what the
/// Ctrl-C tests wait on instead of the clock.
#[derive(Clone, Default)]
struct Gate(std::sync::Arc<(std::sync::Mutex<GateState>, std::sync::Condvar)>);

#[derive(Default)]
struct GateState {
    /// No call gets through.
    closed: bool,
    /// Only S3's calls get through (the bucket goes on, the rest waits).
    only_s3: bool,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        let mut state = self.0.0.lock().unwrap();
        state.closed = closed;
        if !closed {
            state.only_s3 = false;
        }
        self.0.1.notify_all();
    }

    fn hold_all_but_s3(&self) {
        self.0.0.lock().unwrap().only_s3 = true;
        self.0.1.notify_all();
    }

    fn pass(&self, service: &str) {
        let mut state = self.0.0.lock().unwrap();
        while state.closed || (state.only_s3 && service != "s3") {
            state = self.0.1.wait(state).unwrap();
        }
    }

    /// A slow proxy (150 ms a call: an apply takes seconds) whose requests
    /// wait while this gate is closed.
    fn proxy(&self, emulator: &Emulator) -> crate::proxy::Proxy {
        let gate = self.clone();
        crate::proxy::Proxy::start(
            emulator.port,
            crate::proxy::Options {
                delay: std::time::Duration::from_millis(150),
                hook: Some(std::sync::Arc::new(move |request, stage| {
                    if stage == crate::proxy::Stage::Received {
                        gate.pass(&request.service);
                    }
                })),
                ..Default::default()
            },
        )
    }
}

/// Runs apply and presses Ctrl-C `presses` times once the bucket is made
/// (not earlier: AWS takes a bucket's tags in its create, moto needs a
/// second call, and a quit between the two would leave moto an untagged
/// bucket that AWS never has). From the first step done on, only the
/// bucket's calls get through: the steps started beside it are still under
/// way when Ctrl-C comes, whatever the timing. After the press no call gets
/// through (the gate is closed), so nothing new starts before the interrupt
/// is seen, and the second press comes only after the first was
/// acknowledged.
fn interrupted_apply(p: &Project, gate: &Gate, presses: usize) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = p
        .command(&["apply", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    let mut pressed = 0;
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if pressed == 0 && line.contains("✓ created ") && !line.contains("✓ created bucket.") {
            gate.hold_all_but_s3();
        }
        let press = (pressed == 0 && line.contains("✓ created bucket."))
            || (pressed > 0 && line.contains("interrupted: "));
        if press {
            if pressed == 0 {
                gate.set_closed(true);
                // Not synchronisation, a safety net: should the interrupt
                // never be acknowledged, the test fails instead of hanging.
                let gate = gate.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                    gate.set_closed(false);
                });
            }
            // SAFETY: signals our own child, which has not been waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            pressed += 1;
            if pressed == presses {
                gate.set_closed(false);
                break;
            }
        }
        line.clear();
    }
    gate.set_closed(false);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    (child.wait().unwrap().code(), seen)
}

#[tokio::test]
async fn ctrl_c_finishes_what_is_in_flight_and_a_rerun_finishes_the_job() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let gate = Gate::default();
    let proxy = gate.proxy(&emulator);
    let p = Project::new(&proxy.endpoint());
    p.write("stack.yaml", &emulator.stack_yaml("intr", REGION));
    let (code, seen) = interrupted_apply(&p, &gate, 1);
    assert_eq!(code, Some(1), "{seen}");
    assert!(
        seen.contains("interrupted: letting the steps under way finish"),
        "{seen}"
    );
    assert!(seen.contains("apply did not complete"), "{seen}");
    assert!(seen.contains("not started: "), "{seen}");
    assert!(
        seen.contains("run `ihp-infra apply` again to finish"),
        "{seen}"
    );
    let made = tagged(&emulator, "intr").await.len();
    assert!(
        made > 0 && made < emulator.stack_size(),
        "interrupted half-way: {made}\n{seen}"
    );
    assert!(
        !crate::safety::locked(&emulator, "intr").await,
        "lock released"
    );

    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(tagged(&emulator, "intr").await.len(), emulator.stack_size());
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

#[tokio::test]
async fn second_ctrl_c_quits_at_once_and_releases_the_lock() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let gate = Gate::default();
    let proxy = gate.proxy(&emulator);
    let p = Project::new(&proxy.endpoint());
    p.write("stack.yaml", &emulator.stack_yaml("quit", REGION));
    let (code, seen) = interrupted_apply(&p, &gate, 2);
    assert_eq!(code, Some(130), "{seen}");
    assert!(
        seen.contains("quit: run the command again to finish"),
        "{seen}"
    );
    assert!(
        !crate::safety::locked(&emulator, "quit").await,
        "lock released"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(tagged(&emulator, "quit").await.len(), emulator.stack_size());
}

#[tokio::test]
async fn password_quoted_back_by_an_aws_error_is_masked() {
    // Some AWS validation errors quote request parameters; the password
    // travels in CreateDBInstance's. Whatever AWS says, decoded or in the
    // SDK's own form encoding (which leaves `- . _ ~` alone), it is never
    // shown.
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    const SPECIAL: &str = "Kx7-Echo._~!'*()%$#Mq4vT9w2";
    const SURVIVES_ENCODING: &str = "Mq4vT9w2";
    for as_sent in [false, true] {
        let proxy = crate::proxy::Proxy::start(
            emulator.port,
            crate::proxy::Options {
                deny: std::collections::HashMap::from([(
                    "CreateDBInstance".to_string(),
                    "InvalidParameterValue",
                )]),
                echo: !as_sent,
                echo_as_sent: as_sent,
                ..Default::default()
            },
        );
        let p = Project::new(&proxy.endpoint());
        p.write(
            "stack.yaml",
            &stack_yaml("echo", REGION).replace(PASSWORD, SPECIAL),
        );
        for args in [
            &["apply", "--auto-approve"][..],
            &["apply", "--auto-approve", "-vv"],
            &["apply", "--auto-approve", "-vv", "--log-format", "json"],
        ] {
            let out = p.run(args);
            assert_eq!(out.code, 1, "{out:?}");
            let all = out.all();
            assert!(
                all.contains("MasterUserPassword=(sensitive)"),
                "the error is shown, masked (as sent: {as_sent}), {args:?}; quoted unmasked: {}",
                all.contains("MasterUserPassword=")
            );
            assert!(
                !all.contains(SURVIVES_ENCODING),
                "{args:?} (as sent: {as_sent}) showed the password at {:?}",
                all.find(SURVIVES_ENCODING)
            );
        }
    }
}

#[tokio::test]
async fn profile_flag_wins_over_keys_in_the_environment() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("prof", REGION);
    let config = p.write(
        "aws-config",
        "[profile emulator]\naws_access_key_id = from-profile\naws_secret_access_key = from-profile\n",
    );
    // The environment has keys (Project sets them); a profile that doesn't
    // exist must still be an error, not silently the environment's keys.
    let out = p
        .command(&["plan", "--profile", "nosuch"])
        .env("AWS_CONFIG_FILE", &config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed to find out which AWS account to use"),
        "{stderr}"
    );
    assert!(stderr.contains("--profile"), "says what to check: {stderr}");
    // One that exists is used.
    // A profile that doesn't exist sent nothing (not the environment's keys).
    assert_eq!(emulator.signed_by(), Default::default());
    let out = p
        .command(&["plan", "--profile", "emulator", "--detailed-exitcode"])
        .env("AWS_CONFIG_FILE", &config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The emulator takes any key: what signed the calls says which was used.
    assert_eq!(
        emulator.signed_by(),
        ["from-profile".to_string()].into(),
        "the profile's key signed the plan's calls"
    );
}
