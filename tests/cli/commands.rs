//! plan --graph, show and --replace: the plan drawn, the whole stack
//! listed, and one resource rebuilt on purpose.

use crate::common::{Emulator, FULL_STACK, Project, id_filters};
use crate::network::tagged;

const REGION: &str = "eu-central-1";

#[tokio::test]
async fn plan_graph_draws_every_resource_in_the_order_apply_works() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("drawn", REGION);
    let mermaid = p.run_ok(&["plan", "--graph"], 0);
    insta::with_settings!({ filters => id_filters() }, {
        insta::assert_snapshot!(emulator.snapshot("plan_graph"), mermaid.stdout);
    });
    let nodes = mermaid
        .stdout
        .lines()
        .filter(|l| l.contains("[\"+ "))
        .count();
    assert_eq!(nodes, emulator.stack_size(), "{mermaid:?}");
    let dot = p.run_ok(&["plan", "--graph", "dot"], 0);
    assert!(
        dot.stdout.starts_with("digraph \"drawn in eu-central-1\""),
        "{dot:?}"
    );
    assert!(
        dot.stdout.contains("\"vpc.vpc\" -> \"subnet.public\";"),
        "{dot:?}"
    );
    // The picture in docs/architecture.md is this one (of the whole stack).
    if emulator.serves_whole_stack() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md"))
                .unwrap();
        let picture = mermaid.stdout.replace("drawn-", "<prefix>-");
        assert!(
            docs.contains(&picture),
            "docs/architecture.md shows an outdated graph; put this in its mermaid block:\n{picture}"
        );
    }
    let out = p.run_ok(&["plan", "--graph", "--json"], 1);
    assert!(out.stderr.contains("cannot be used with"), "{out:?}");
}

#[tokio::test]
async fn show_lists_every_resource_with_its_id_unchanged_ones_too() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("listed", REGION);
    let before = p.run_ok(&["show"], 0);
    assert!(
        before.stdout.starts_with(&format!(
            "Stack listed in eu-central-1: 0 resources live, {} to change",
            emulator.stack_size()
        )),
        "{before:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    let after = p.run_ok(&["status"], 0);
    let live = tagged(&emulator, "listed").await;
    let rows: Vec<&str> = after.stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), emulator.stack_size(), "{after:?}");
    for row in &rows {
        assert!(row.ends_with("as the stack file says"), "{row}");
    }
    for found in live {
        // tagged() names some by kind and id ("bucket listed-storage").
        let id = found.rsplit(' ').next().unwrap();
        assert!(
            after.stdout.contains(id),
            "{found} is not listed: {after:?}"
        );
    }
}

#[tokio::test]
async fn replace_rebuilds_one_resource_on_purpose() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "again", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    let server = |out: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with("instance.app"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    };
    let first = server(&p.run_ok(&["show"], 0).stdout);

    // A typo is refused before any AWS call.
    let calls = emulator.actions().len();
    let out = p.run_ok(&["apply", "--replace", "instance.ap", "--auto-approve"], 1);
    assert!(
        out.stderr.contains("the stack has no such resource"),
        "{out:?}"
    );
    let out = p.run_ok(&["plan", "--replace", "instances.app"], 1);
    assert!(out.stderr.contains("is not a kind of resource"), "{out:?}");
    assert_eq!(emulator.actions().len(), calls, "no AWS call");

    let plan = p.run_ok(&["plan", "--replace", "instance.app"], 0);
    assert!(plan.stdout.contains("1 to replace"), "{plan:?}");
    // The database's data: the same guard as a change that replaces it.
    let out = p.run_ok(
        &[
            "apply",
            "--replace",
            "database.postgres-db",
            "--auto-approve",
        ],
        1,
    );
    assert!(out.stderr.contains("--replace-database"), "{out:?}");

    p.run_ok(&["apply", "--replace", "instance.app", "--auto-approve"], 0);
    let second = server(&p.run_ok(&["show"], 0).stdout);
    assert_ne!(first, second, "a new server");
    let old = ec2
        .describe_instances()
        .instance_ids(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|s| s.as_str()),
        Some("terminated")
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

#[test]
fn schema_prints_the_stack_files_json_schema_without_a_stack() {
    let p = Project::new("http://127.0.0.1:9");
    let out = p.run_ok(&["schema"], 0);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(schema["title"], "ihp-infra stack file");
    assert_eq!(
        out.stdout,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crates/core/stack.schema.json"
        ))
        .unwrap()
    );
    // Every key of the example stack file is one the schema knows.
    let example: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/stacks/example.yaml"))
            .unwrap(),
    )
    .unwrap();
    for (key, value) in example.as_object().unwrap() {
        let known = &schema["properties"][key];
        assert!(known.is_object(), "{key} is not in the schema");
        if let (Some(section), Some(reference)) = (value.as_object(), known["$ref"].as_str()) {
            let name = reference.rsplit('/').next().unwrap();
            for inner in section.keys() {
                assert!(
                    schema["$defs"][name]["properties"][inner].is_object(),
                    "{key}.{inner} is not in the schema"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_saved_plan_is_applied_only_while_it_is_still_the_plan() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("saved", REGION);
    let out = p.run_ok(&["plan", "--out", "saved.plan"], 0);
    assert!(
        out.stderr.contains("Saved the plan to saved.plan"),
        "{out:?}"
    );
    let file = p.dir.path().join("saved.plan");
    let text = std::fs::read_to_string(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Something moves in between: a resource of the plan appears by hand.
    let logs = emulator.logs(REGION).await;
    logs.create_log_group()
        .log_group_name("/ihp/saved")
        .tags("ihp-infra:stack", "saved")
        .tags("Name", "saved-logs")
        .send()
        .await
        .unwrap();
    let before = emulator.actions().len();
    let out = p.run_ok(&["apply", "saved.plan"], 1);
    assert!(
        out.stderr
            .contains("is no longer the plan; nothing was changed")
            && out.stderr.contains("log_group.logs: was to create, now to"),
        "{out:?}"
    );
    let writes: Vec<String> = emulator
        .actions()
        .into_iter()
        .skip(before)
        .filter(|a| crate::common::is_write(a))
        .filter(|a| !a.contains("LogGroup") && a != "PutRetentionPolicy")
        .collect();
    assert!(writes.is_empty(), "only the lock was written: {writes:?}");
    logs.delete_log_group()
        .log_group_name("/ihp/saved")
        .send()
        .await
        .unwrap();

    // The same plan again: applied without a question (it was the review).
    p.run_ok(&["apply", "saved.plan"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let live = tagged(&emulator, "saved").await;
    assert_eq!(live.len(), emulator.stack_size());

    // A plan of an edited stack file, of another stack, or too old: refused
    // before any AWS call.
    let calls = emulator.actions().len();
    std::fs::write(&file, &text).unwrap();
    let stack = p.dir.path().join("stack.yaml");
    let original = std::fs::read_to_string(&stack).unwrap();
    std::fs::write(&stack, format!("{original}# edited\n")).unwrap();
    let out = p.run_ok(&["apply", "saved.plan"], 1);
    assert!(out.stderr.contains("the stack file changed"), "{out:?}");
    std::fs::write(&stack, &original).unwrap();
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    old["created"] = (old["created"].as_u64().unwrap() - 25 * 3600).into();
    std::fs::write(&file, old.to_string()).unwrap();
    let out = p.run_ok(&["apply", "saved.plan"], 1);
    assert!(
        out.stderr.contains("saved plans are good for 24 hours"),
        "{out:?}"
    );
    let other = emulator.project("other", REGION);
    std::fs::write(other.dir.path().join("saved.plan"), &text).unwrap();
    let out = other.run_ok(&["apply", "saved.plan"], 1);
    assert!(out.stderr.contains("is a plan of stack saved"), "{out:?}");
    let out = p.run_ok(&["apply", "stack.yaml"], 1);
    assert!(
        out.stderr.contains("is not a saved plan of ihp-infra"),
        "{out:?}"
    );
    assert_eq!(emulator.actions().len(), calls, "no AWS call");
}
