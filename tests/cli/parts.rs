//! Stacks that leave the server or the database out (`enabled: false`):
//! Postgres on the server itself, or a first stage without a server. Such
//! a stack also runs on LocalStack's community edition, which has no RDS
//! and launches no server with an instance profile.

use crate::common::{
    Emulator, FULL_STACK, KEY_NAME, Needs, Project, bare_stack_yaml, is_write, stack_yaml,
};
use crate::network::tagged;
use crate::safety::{locked, orphans};

const REGION: &str = "eu-central-1";

fn without_server_and_database(prefix: &str) -> String {
    format!(
        "prefix: {prefix}\nregion: {REGION}\naz_1: {REGION}a\naz_2: {REGION}b\nkey_name: {KEY_NAME}\ninstance: {{ enabled: false }}\ndatabase: {{ enabled: false }}\n"
    )
}

#[tokio::test]
async fn stack_without_server_and_database_runs_on_every_emulator() {
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &without_server_and_database("parts"));
    let out = p.run_ok(&["validate"], 0);
    assert_eq!(
        out.stdout,
        "stack.yaml is valid: stack parts in eu-central-1 (eu-central-1a, eu-central-1b), without server and database\n"
    );
    // No key pair and no password: nothing in the stack needs them.
    let out = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        out.stdout
            .contains("Plan: 18 to add, 0 to change, 0 to replace, 0 to destroy."),
        "{out:?}"
    );
    for left_out in [
        "instance.app",
        "database.",
        "security_group.db",
        "db_subnet_group",
    ] {
        assert!(!out.stdout.contains(left_out), "{left_out}: {out:?}");
    }
    let out = p.run_ok(&["apply", "--auto-approve"], 0);
    // No file is written, but the hand-over values are shown.
    assert!(!out.stderr.contains("Wrote"), "{out:?}");
    assert!(
        out.stderr.contains("For the NixOS configuration")
            && out.stderr.contains("S3_BUCKET=parts-storage\n"),
        "{out:?}"
    );
    assert!(
        !p.dir.path().join("db_info.txt").exists(),
        "no server and no database: nothing for db_info.txt"
    );
    let out = p.run_ok(&["output"], 0);
    assert!(out.stdout.contains("S3_BUCKET=parts-storage"), "{out:?}");
    assert!(
        out.stdout
            .contains("# The stack has no server (instance: { enabled: false })."),
        "{out:?}"
    );
    let live = tagged(&emulator, "parts").await;
    assert_eq!(live.len(), 18, "{live:?}");
    assert_eq!(orphans(&emulator, "parts").await, Vec::<String>::new());
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert_eq!(tagged(&emulator, "parts").await, Vec::<String>::new());
    assert!(!locked(&emulator, "parts").await);
    let writes: Vec<String> = emulator
        .actions()
        .into_iter()
        .filter(|a| is_write(a))
        .collect();
    assert!(writes.len() >= 13, "the recording works: {writes:?}");
    assert!(
        writes
            .iter()
            .all(|a| !a.contains("DB") && a != "RunInstances"),
        "{writes:?}"
    );
}

#[tokio::test]
async fn database_left_out_later_is_deleted_with_a_final_snapshot() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "later", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(
        tagged(&emulator, "later").await.len(),
        emulator.stack_size()
    );

    // The password may stay in the file: it is simply not needed.
    p.write(
        "stack.yaml",
        &format!(
            "{}database:\n  enabled: false\n",
            stack_yaml("later", REGION)
        ),
    );
    let out = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        out.stdout
            .contains("Plan: 0 to add, 0 to change, 0 to replace, 4 to destroy."),
        "{out:?}"
    );
    assert!(out.stdout.contains("- database.postgres-db"), "{out:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(
        tagged(&emulator, "later").await.len(),
        emulator.stack_size() - 4,
        "the database, its subnet group and its security group went"
    );
    let snapshots = emulator
        .rds(REGION)
        .await
        .describe_db_snapshots()
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = snapshots
        .db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("later-postgres-db-final-")),
        "{names:?}"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

#[tokio::test]
async fn server_without_database_launches_or_says_why_it_cannot() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    let server_only = bare_stack_yaml("solo", REGION).replace("instance: { enabled: false }\n", "");
    p.write("stack.yaml", &server_only);
    let out = p.run(&["apply", "--auto-approve"]);
    if emulator.has(Needs::InstanceProfile) {
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(
            tagged(&emulator, "solo").await.len(),
            20,
            "with the server and its address"
        );
        p.run_ok(&["plan", "--detailed-exitcode"], 0);
    } else {
        // LocalStack community: its EC2 can't see the instance profile.
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("NoSuchEntity"), "{out:?}");
        assert!(
            out.stderr
                .contains("leave the server out there (instance: { enabled: false })"),
            "{out:?}"
        );
        assert_eq!(
            tagged(&emulator, "solo").await.len(),
            18,
            "everything but the server was made"
        );
    }
    assert!(!p.dir.path().join("db_info.txt").exists());
    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert_eq!(tagged(&emulator, "solo").await, Vec::<String>::new());
}

#[tokio::test]
async fn server_left_out_later_is_terminated_and_db_info_stays_unwritten() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "noserver", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(
        tagged(&emulator, "noserver").await.len(),
        emulator.stack_size()
    );
    std::fs::remove_file(p.dir.path().join("db_info.txt")).unwrap();

    p.write(
        "stack.yaml",
        &format!(
            "{}instance:\n  enabled: false\n  type: t3.large\n",
            stack_yaml("noserver", REGION)
        ),
    );
    let out = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        out.stdout
            .contains("Plan: 0 to add, 0 to change, 0 to replace, 2 to destroy."),
        "{out:?}"
    );
    assert!(out.stdout.contains("- instance.app"), "{out:?}");
    assert!(out.stdout.contains("- elastic_ip.app-ip"), "{out:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(
        tagged(&emulator, "noserver").await.len(),
        emulator.stack_size() - 2,
        "the server and its address went"
    );
    assert!(
        !p.dir.path().join("db_info.txt").exists(),
        "no server: no Instance URL for db_info.txt"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}
