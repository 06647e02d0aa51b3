//! The NixOS server, the database and db_info.txt, against moto with the
//! NixOS image fixture (localstack/nixos-amis.json).

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{Filter, InstanceStateName};

use crate::common::{
    Emulator, FULL_STACK, KEY_NAME, Needs, PASSWORD, Project, id_filters, stack_yaml,
};
use crate::network::tagged;
use crate::proxy::{Options, Proxy};

const REGION: &str = "eu-central-1";
const NEWEST_X86: &str = "ami-0a11c0ffee2605102";
/// The 26.05 x86_64 image before it.
const OLDER_X86: &str = "ami-0a11c0ffee2605101";

fn with(p: &Project, prefix: &str, extra: &str) {
    p.write(
        "stack.yaml",
        &format!("{}{extra}", stack_yaml(prefix, REGION)),
    );
}

/// A stack with the server but without a database, for the tests of what
/// planning the server needs (its image, its key pair): every emulator
/// serves that, as nothing is launched.
fn without_database(p: &Project, prefix: &str, extra: &str) {
    with(p, prefix, &format!("database:\n  enabled: false\n{extra}"));
}

async fn server(ec2: &aws_sdk_ec2::Client, prefix: &str) -> aws_sdk_ec2::types::Instance {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:ihp-infra:stack")
                .values(prefix)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("running")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let all: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect();
    assert_eq!(all.len(), 1, "exactly one server: {all:?}");
    all.into_iter().next().unwrap()
}

#[tokio::test]
async fn image_is_chosen_by_release_and_architecture() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    without_database(&p, "img", "");

    // The newest available image of the NixOS account: not the pending one,
    // not the newer one another account published under the same name.
    let out = p.run_ok(&["plan"], 0);
    assert!(
        out.stdout
            .contains(&format!("image_id              = \"{NEWEST_X86}\"")),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("nixos/26.05.20261101.9f8e7d6-x86_64-linux"),
        "{out:?}"
    );

    without_database(&p, "img", "instance:\n  nixos_release: \"25.11\"\n");
    let out = p.run_ok(&["plan"], 0);
    assert!(
        out.stdout
            .contains("nixos/25.11.20260301.def5678-x86_64-linux"),
        "{out:?}"
    );

    without_database(&p, "img", "instance:\n  type: t4g.small\n");
    let out = p.run_ok(&["plan"], 0);
    assert!(
        out.stdout
            .contains("nixos/26.05.20261101.9f8e7d6-aarch64-linux"),
        "{out:?}"
    );
    assert!(out.stdout.contains("\"nixos newest arm64\""), "{out:?}");

    without_database(&p, "img", "instance:\n  architecture: arm64\n");
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr
            .contains("instance type t3.medium runs x86_64, but the stack asks for arm64 images"),
        "{out:?}"
    );

    without_database(&p, "img", "instance:\n  nixos_release: \"24.05\"\n");
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr.contains(
            "no NixOS image found in eu-central-1 for release 24.05 and architecture x86_64"
        ),
        "{out:?}"
    );
}

#[tokio::test]
async fn missing_key_pair_is_refused_at_plan() {
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    without_database(&p, "nokey", "");
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = p.run_ok(args, 1);
        assert!(
            out.stderr.contains(&format!(
                "key pair \"{KEY_NAME}\" does not exist in eu-central-1"
            )),
            "{out:?}"
        );
        // What to do next.
        assert!(
            out.stderr.contains(&format!(
                "aws ec2 import-key-pair --region {REGION} --key-name {KEY_NAME}"
            )),
            "{out:?}"
        );
    }
    assert!(tagged(&emulator, "nokey").await.is_empty());
}

#[tokio::test]
async fn server_database_and_db_info_as_asked() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "srv", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);

    let i = server(&ec2, "srv").await;
    assert_eq!(i.image_id(), Some(NEWEST_X86));
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.medium"));
    assert_eq!(i.key_name(), Some(KEY_NAME));
    assert_eq!(
        i.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required"),
        "IMDSv2 only"
    );
    let app = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("tag:Name").values("srv-app").build())
        .send()
        .await
        .unwrap();
    let groups: Vec<_> = i
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, [app.security_groups()[0].group_id().unwrap()]);
    let root = i
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some("/dev/xvda"))
        .unwrap();
    let volume_id = root.ebs().unwrap().volume_id().unwrap();
    let volume = ec2
        .describe_volumes()
        .volume_ids(volume_id)
        .send()
        .await
        .unwrap();
    let volume = &volume.volumes()[0];
    // IHP's guide: at least 60 GiB.
    assert_eq!(volume.size(), Some(60));
    assert_eq!(volume.encrypted(), Some(true));
    assert!(
        volume
            .tags()
            .iter()
            .any(|t| t.key() == Some("ihp-infra:stack") && t.value() == Some("srv")),
        "the volume is tagged at launch"
    );

    let db = rds
        .describe_db_instances()
        .db_instance_identifier("srv-postgres-db")
        .send()
        .await
        .unwrap();
    let db = &db.db_instances()[0];
    assert_eq!(db.engine(), Some("postgres"));
    assert_eq!(db.db_instance_class(), Some("db.t3.micro"));
    assert_eq!(db.allocated_storage(), Some(20));
    assert_eq!(db.master_username(), Some("postgres_user"));
    assert_eq!(db.publicly_accessible(), Some(false));
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(
        db.deletion_protection(),
        Some(true),
        "on for a new database"
    );
    assert_eq!(db.multi_az(), Some(false));
    assert_eq!(
        db.db_subnet_group().and_then(|g| g.db_subnet_group_name()),
        Some("srv-db-subnets")
    );
    let hash = db
        .tag_list()
        .iter()
        .find(|t| t.key() == Some("ihp-infra:password-hash"))
        .unwrap();
    assert!(hash.value().unwrap().starts_with("argon2id:"));
    assert!(!hash.value().unwrap().contains(PASSWORD));

    let path = p.dir.path().join("db_info.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let endpoint = db.endpoint().unwrap().address().unwrap();
    assert_eq!(
        text,
        format!(
            "Instance URL: {}\nDB Endpoint: {endpoint}\nDB Username: postgres_user\nDB Password: {PASSWORD}\n",
            i.public_dns_name().unwrap()
        )
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A converged apply makes no write call and still writes db_info.txt.
    std::fs::remove_file(&path).unwrap();
    let before = emulator.actions().len();
    p.run_ok(&["apply", "--auto-approve"], 0);
    let writes: Vec<_> = emulator.actions()[before..]
        .iter()
        .filter(|a| crate::common::is_write(a))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[tokio::test]
async fn newer_image_never_replaces_the_server_but_a_new_release_does() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    // The newest 26.05 image is held back from every answer until NixOS
    // "publishes" it, after the server runs.
    let hidden = Arc::new(Mutex::new(Some(NEWEST_X86.to_string())));
    let proxy = Proxy::start(
        emulator.port,
        Options {
            hidden_image: Some(hidden.clone()),
            ..Options::default()
        },
    );
    let p = Project::with_stack(&proxy.endpoint(), "nix", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    let running = server(&ec2, "nix").await;
    let first = running.instance_id().unwrap().to_string();
    assert_eq!(running.image_id(), Some(OLDER_X86));

    // A newer image of the same release: the server stays.
    hidden.lock().unwrap().take();
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 0);
    assert!(plan.stdout.starts_with("No changes"), "{plan:?}");

    // NixOS deletes old images: the server's own is gone. Still no change.
    ec2.deregister_image()
        .image_id(OLDER_X86)
        .send()
        .await
        .unwrap();
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    with(&p, "nix", "instance:\n  nixos_release: \"25.11\"\n");
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    insta::with_settings!({ filters => id_filters() }, {
        insta::assert_snapshot!("plan_new_release", plan.stdout);
    });
    p.run_ok(&["apply", "--auto-approve"], 0);
    let second = server(&ec2, "nix").await;
    assert_ne!(second.instance_id(), Some(first.as_str()));
    assert_eq!(second.image_id(), Some("ami-0a11c0ffee0251102"));
    let old = ec2
        .describe_instances()
        .instance_ids(&first)
        .send()
        .await
        .unwrap();
    let state = old.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .clone();
    assert_eq!(state, InstanceStateName::Terminated);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

/// Found by killing an apply inside a type change (stop, modify, start):
/// the server stayed stopped, the plan saw no change and apply then failed
/// to find a running server. A stopped server is now a change: started.
#[tokio::test]
async fn server_left_stopped_by_an_interrupted_type_change_is_started_again() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "stopped", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    let id = server(&ec2, "stopped")
        .await
        .instance_id()
        .unwrap()
        .to_string();
    ec2.stop_instances().instance_ids(&id).send().await.unwrap();
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.stdout.contains("state   \"stopped\" -> \"running\"")
            || plan.stdout.contains("state \"stopped\" -> \"running\""),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    let running = server(&ec2, "stopped").await;
    assert_eq!(running.instance_id(), Some(id.as_str()), "the same server");
    assert_eq!(
        running.state().and_then(|s| s.name()),
        Some(&InstanceStateName::Running)
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

/// The stack's Elastic IPs: (allocation id, public ip, instance it points at).
async fn elastic_ips(
    ec2: &aws_sdk_ec2::Client,
    prefix: &str,
) -> Vec<(String, String, Option<String>)> {
    let out = ec2
        .describe_addresses()
        .filters(
            Filter::builder()
                .name("tag:ihp-infra:stack")
                .values(prefix)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.addresses()
        .iter()
        .map(|a| {
            let tags = a.tags();
            assert!(
                tags.iter()
                    .any(|t| t.key() == Some("Name")
                        && t.value() == Some(&format!("{prefix}-app-ip"))),
                "named: {a:?}"
            );
            (
                a.allocation_id().unwrap().to_string(),
                a.public_ip().unwrap().to_string(),
                a.instance_id().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test]
async fn elastic_ip_follows_a_replaced_server_and_goes_with_destroy() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "eip", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    let first = server(&ec2, "eip").await.instance_id().unwrap().to_string();
    let ips = elastic_ips(&ec2, "eip").await;
    assert_eq!(ips.len(), 1, "one address: {ips:?}");
    let (allocation, ip, instance) = ips[0].clone();
    assert_eq!(instance.as_deref(), Some(first.as_str()), "on the server");
    // The hand-over gives the address that stays.
    let out = p.run_ok(&["output"], 0);
    assert!(
        out.stdout.contains(&format!("INSTANCE_IP={ip}\n")),
        "{out:?}"
    );

    // A new release replaces the server: the address moves to the new one.
    with(&p, "eip", "instance:\n  nixos_release: \"25.11\"\n");
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(plan.stdout.contains("~ elastic_ip.app-ip"), "{plan:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    let second = server(&ec2, "eip").await.instance_id().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(
        elastic_ips(&ec2, "eip").await,
        vec![(allocation, ip, Some(second))],
        "the same address, now on the new server"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert_eq!(elastic_ips(&ec2, "eip").await, vec![], "released");
    assert_eq!(tagged(&emulator, "eip").await, Vec::<String>::new());
}

#[tokio::test]
async fn server_holding_postgres_is_replaced_only_with_replace_server() {
    // Without RDS (IHP's appWithPostgres) the data is on the server's disk,
    // which a replacement deletes with no snapshot.
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    without_database(&p, "onbox", "");
    p.run_ok(&["apply", "--auto-approve"], 0);
    let first = server(&ec2, "onbox")
        .await
        .instance_id()
        .unwrap()
        .to_string();

    without_database(&p, "onbox", "instance:\n  nixos_release: \"25.11\"\n");
    let plan = p.run_ok(&["plan", "--json"], 0);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["apply_needs"], serde_json::json!(["--replace-server"]));
    let out = p.run_ok(&["apply", "--auto-approve"], 1);
    assert!(
        out.stdout.contains(
            "! the new server starts without the data on the old one's disk (Postgres, as there is no RDS database), kept only in a snapshot (apply needs --replace-server)"
        ),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("error: the plan replaces the server onbox-app (")
            && out.stderr.contains("because image changes")
            && out.stderr.contains("apply with --replace-server"),
        "{out:?}"
    );
    assert_eq!(
        server(&ec2, "onbox").await.instance_id(),
        Some(first.as_str()),
        "nothing done"
    );
    let out = p.run_ok(&["apply", "--auto-approve", "--replace-server"], 0);
    let second = server(&ec2, "onbox")
        .await
        .instance_id()
        .unwrap()
        .to_string();
    assert_ne!(second, first);
    // The old disk was kept all the same.
    let kept = disk_snapshots(&ec2, "onbox").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, first);
    assert!(out.stderr.contains(&kept[0].0), "{out:?}");
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let out = p.run_ok(&["destroy", "--auto-approve"], 0);
    assert!(
        out.stdout.contains("The server's disk (the stack has no RDS database: Postgres lives there) keeps a snapshot; --skip-final-snapshot deletes it without one."),
        "{out:?}"
    );
    let kept = disk_snapshots(&ec2, "onbox").await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|(_, of)| *of == second), "{kept:?}");
}

#[tokio::test]
async fn destroy_keeps_the_disk_of_a_server_holding_postgres_unless_told_otherwise() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    for (prefix, flags, kept) in [
        ("diskkept", &[][..], 1),
        ("diskgone", &["--skip-final-snapshot"][..], 0),
    ] {
        let p = Project::new(&emulator.endpoint());
        without_database(&p, prefix, "");
        p.run_ok(&["apply", "--auto-approve"], 0);
        let id = server(&ec2, prefix)
            .await
            .instance_id()
            .unwrap()
            .to_string();
        let mut args = vec!["destroy", "--auto-approve"];
        args.extend(flags);
        // CreateSnapshot takes no idempotency token: its lost answer must
        // not end in a second snapshot.
        let proxy = Proxy::start(
            emulator.port,
            Options {
                lose_first_answer: ["CreateSnapshot".to_string()].into(),
                ..Options::default()
            },
        );
        let out = p.run_at(&proxy.endpoint(), &args);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(proxy.injected().len(), kept, "{:?}", proxy.injected());
        let snapshots = disk_snapshots(&ec2, prefix).await;
        assert_eq!(snapshots.len(), kept, "{prefix}: {snapshots:?}");
        if kept == 1 {
            assert_eq!(snapshots[0].1, id);
            assert!(
                out.stderr
                    .contains(&format!("snapshot of the server's disk {}", snapshots[0].0)),
                "{out:?}"
            );
        } else {
            assert!(out.stdout.contains("WITHOUT a snapshot"), "{out:?}");
        }
        assert!(tagged(&emulator, prefix).await.is_empty());
    }
}

/// The disk snapshots kept of stack `prefix`'s servers: (snapshot, server).
async fn disk_snapshots(ec2: &aws_sdk_ec2::Client, prefix: &str) -> Vec<(String, String)> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name("tag:ihp-infra:kept-from-stack")
                .values(prefix)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.snapshots()
        .iter()
        .map(|s| {
            let of = s
                .tags()
                .iter()
                .find(|t| t.key() == Some("ihp-infra:disk-of"))
                .and_then(|t| t.value())
                .unwrap_or_default();
            (s.snapshot_id().unwrap().to_string(), of.to_string())
        })
        .collect()
}

#[tokio::test]
async fn instance_type_and_volume_change_in_place_and_volume_never_shrinks() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "size", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    let id = server(&ec2, "size")
        .await
        .instance_id()
        .unwrap()
        .to_string();

    with(
        &p,
        "size",
        "instance:\n  type: t3.large\n  volume_size: 80\n",
    );
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    insta::with_settings!({ filters => id_filters() }, {
        insta::assert_snapshot!("plan_resize", plan.stdout);
    });
    p.run_ok(&["apply", "--auto-approve"], 0);
    let i = server(&ec2, "size").await;
    assert_eq!(
        i.instance_id(),
        Some(id.as_str()),
        "changed in place, not replaced"
    );
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.large"));
    assert_eq!(
        i.state().and_then(|s| s.name()),
        Some(&InstanceStateName::Running)
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    with(
        &p,
        "size",
        "instance:\n  type: t3.large\n  volume_size: 75\n",
    );
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr
            .contains("cannot change root_volume_size of instance.app from 80 to 75"),
        "{out:?}"
    );
}

#[tokio::test]
async fn password_change_is_detected_and_applied_without_showing_it() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let p = Project::new(&emulator.endpoint());
    let stack = stack_yaml("pw", REGION).replace(&format!("\"{PASSWORD}\""), "{ env: PW }");
    p.write("stack.yaml", &stack);
    let run = |args: &[&str], pw: &str| {
        let out = p.command(args).env("PW", pw).output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(pw), "printed the password: {all}");
        (out.status.code(), all)
    };
    assert_eq!(
        run(&["apply", "--auto-approve"], "first-pass-123").0,
        Some(0)
    );
    assert_eq!(
        run(&["plan", "--detailed-exitcode"], "first-pass-123").0,
        Some(0)
    );
    let hash_of = || async {
        let db = rds
            .describe_db_instances()
            .db_instance_identifier("pw-postgres-db")
            .send()
            .await
            .unwrap();
        db.db_instances()[0]
            .tag_list()
            .iter()
            .find(|t| t.key() == Some("ihp-infra:password-hash"))
            .and_then(|t| t.value().map(String::from))
            .unwrap()
    };
    let first_hash = hash_of().await;

    let (code, out) = run(&["plan", "--detailed-exitcode"], "second-pass-456");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("password   (sensitive) -> (sensitive)"),
        "{out}"
    );
    // The database's URL, in the server's parameter, changes with it.
    assert!(
        out.contains("~ parameter.database-url pw-database-url (/ihp-infra/pw/DATABASE_URL)\n        value   (sensitive) -> (sensitive)\n"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 0 to add, 2 to change, 0 to replace, 0 to destroy."),
        "{out}"
    );
    assert_eq!(
        run(&["apply", "--auto-approve"], "second-pass-456").0,
        Some(0)
    );
    assert_ne!(hash_of().await, first_hash);
    // And RDS was sent it: the recorded ModifyDBInstance carries it (only
    // compared, never printed).
    let modifies = emulator.sent("ModifyDBInstance");
    assert!(
        modifies
            .iter()
            .any(|m| m.get("MasterUserPassword").map(String::as_str) == Some("second-pass-456")),
        "none of {} ModifyDBInstance calls carried the new password",
        modifies.len()
    );
    assert_eq!(
        run(&["plan", "--detailed-exitcode"], "second-pass-456").0,
        Some(0)
    );
    let info = std::fs::read_to_string(p.dir.path().join("db_info.txt")).unwrap();
    assert!(info.ends_with("DB Password: second-pass-456\n"), "{info}");
}

#[tokio::test]
async fn destroy_keeps_a_final_snapshot_unless_told_otherwise() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let snapshots = || async {
        let out = rds.describe_db_snapshots().send().await.unwrap();
        out.db_snapshots()
            .iter()
            .filter_map(|s| s.db_snapshot_identifier().map(String::from))
            .collect::<Vec<_>>()
    };

    let keep = Project::with_stack(&emulator.endpoint(), "keep", REGION);
    keep.run_ok(&["apply", "--auto-approve"], 0);
    // The emulator, as RDS, refuses to delete a protected database: destroy
    // lifts the protection itself, and says so first.
    let out = keep.run_ok(&["destroy", "--auto-approve"], 0);
    assert!(
        out.stdout.contains("The database keeps a final snapshot"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("# deletion protection is on: lifted first, by this run only"),
        "{out:?}"
    );
    let kept = snapshots().await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("keep-postgres-db-final-"), "{kept:?}");
    assert!(
        out.stderr
            .contains(&format!("kept: final snapshot {}", kept[0])),
        "{out:?}"
    );

    let lose = Project::with_stack(&emulator.endpoint(), "lose", REGION);
    lose.run_ok(&["apply", "--auto-approve"], 0);
    let out = lose.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert!(out.stdout.contains("WITHOUT a final snapshot"), "{out:?}");
    assert_eq!(snapshots().await, kept, "no snapshot for the second stack");
}

#[tokio::test]
async fn database_replaced_by_an_edit_needs_replace_database_and_keeps_a_snapshot() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "renamed", "");
    p.run_ok(&["apply", "--auto-approve"], 0);
    let database = || async {
        let out = rds
            .describe_db_instances()
            .db_instance_identifier("renamed-postgres-db")
            .send()
            .await
            .unwrap();
        out.db_instances()[0].clone()
    };
    assert_eq!(database().await.master_username(), Some("postgres_user"));
    // A new master username: RDS can't change it, the database is replaced.
    with(&p, "renamed", "database:\n  username: app_owner\n");
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout
            .contains("! the new database starts empty: the data stays only in the final snapshot of the old one (apply needs --replace-database)"),
        "{plan:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&p.run_ok(&["plan", "--json"], 0).stdout).unwrap();
    assert_eq!(
        json["apply_needs"],
        serde_json::json!(["--replace-database"])
    );
    // --auto-approve alone is not enough: refused after the plan, nothing done.
    let out = p.run_ok(&["apply", "--auto-approve"], 1);
    assert_eq!(out.stdout, plan.stdout);
    assert!(
        out.stderr
            .contains("error: the plan replaces the database renamed-postgres-db (renamed-postgres-db) because")
            && out.stderr.contains("because username changes")
            && out.stderr.contains("apply with --replace-database"),
        "{out:?}"
    );
    let still = database().await;
    assert_eq!(still.master_username(), Some("postgres_user"));

    p.run_ok(&["apply", "--auto-approve", "--replace-database"], 0);
    let after = database().await;
    // RDS can't change a master username: a new database.
    assert_eq!(after.master_username(), Some("app_owner"));
    let snapshots = rds
        .describe_db_snapshots()
        .db_instance_identifier("renamed-postgres-db")
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    assert_eq!(snapshots.db_snapshots().len(), 1, "{snapshots:?}");
    assert_eq!(
        snapshots.db_snapshots()[0].master_username(),
        Some("postgres_user"),
        "the old database's"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let info = std::fs::read_to_string(p.dir.path().join("db_info.txt")).unwrap();
    assert!(info.contains("app_owner"), "db_info.txt names the new user");
    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
}

#[tokio::test]
async fn tags_added_later_reach_the_db_subnet_group_and_database() {
    // Regression: the DB subnet group's update ignored tags, so a stack
    // that gained `tags:` planned the same change on every run.
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "tagged", "");
    p.run_ok(&["apply", "--auto-approve"], 0);
    with(&p, "tagged", "tags:\n  team: web\n");
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let group = rds
        .describe_db_subnet_groups()
        .db_subnet_group_name("tagged-db-subnets")
        .send()
        .await
        .unwrap();
    let db = rds
        .describe_db_instances()
        .db_instance_identifier("tagged-postgres-db")
        .send()
        .await
        .unwrap();
    for arn in [
        group.db_subnet_groups()[0].db_subnet_group_arn().unwrap(),
        db.db_instances()[0].db_instance_arn().unwrap(),
    ] {
        let tags = rds
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .unwrap();
        assert!(
            tags.tag_list()
                .iter()
                .any(|t| t.key() == Some("team") && t.value() == Some("web")),
            "{arn}: {tags:?}"
        );
    }
    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
}

#[tokio::test]
async fn deletion_protection_and_a_standby_change_in_place() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "guard", "");
    p.run_ok(&["apply", "--auto-approve"], 0);
    with(
        &p,
        "guard",
        "database:\n  deletion_protection: false\n  multi_az: true\n",
    );
    let out = p.run_ok(&["plan"], 0);
    assert!(
        out.stdout.contains("deletion_protection   true -> false")
            && out
                .stdout
                .contains("multi_az              false -> true  # a standby in a second zone: doubles the database's cost")
            && out.stdout.contains("0 to replace"),
        "{out:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let db = rds
        .describe_db_instances()
        .db_instance_identifier("guard-postgres-db")
        .send()
        .await
        .unwrap();
    let db = &db.db_instances()[0];
    assert_eq!(db.deletion_protection(), Some(false));
    assert_eq!(db.multi_az(), Some(true));
    // Unprotected: destroy has nothing to lift.
    let out = p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert!(!out.stdout.contains("deletion protection"), "{out:?}");
}

#[tokio::test]
async fn database_of_someone_else_is_not_taken_over() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    rds.create_db_instance()
        .db_instance_identifier("theirs-postgres-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("someone")
        .master_user_password("their-password")
        .send()
        .await
        .unwrap();
    let p = Project::with_stack(&emulator.endpoint(), "theirs", REGION);
    for args in [&["plan"][..], &["destroy", "--auto-approve"]] {
        let out = p.run_ok(args, 1);
        assert!(
            out.stderr
                .contains("database theirs-postgres-db exists but is not part of stack theirs"),
            "{out:?}"
        );
    }
    let db = rds
        .describe_db_instances()
        .db_instance_identifier("theirs-postgres-db")
        .send()
        .await;
    assert!(db.is_ok(), "left alone");
}

/// The resources found by name rather than by tag: an untagged one with
/// the stack's name is someone else's, on plan, apply and destroy, and is
/// left as it was.
#[tokio::test]
async fn untagged_log_group_iam_and_subnet_group_are_never_taken_over() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let (iam, logs, rds) = (
        emulator.iam().await,
        emulator.logs(REGION).await,
        emulator.rds(REGION).await,
    );
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#;
    let subnet = ec2
        .describe_subnets()
        .send()
        .await
        .unwrap()
        .subnets()
        .iter()
        .filter(|s| s.default_for_az() == Some(true))
        .filter_map(|s| s.subnet_id().map(String::from))
        .collect::<Vec<_>>();
    // (prefix, what the error names, how to make it)
    let cases: [(&str, &str); 5] = [
        ("tkn-logs", "log group /ihp/tkn-logs"),
        ("tkn-role", "IAM role tkn-role-app-role"),
        ("tkn-pol", "IAM policy tkn-pol-s3-access"),
        ("tkn-prof", "IAM instance profile tkn-prof-app-profile"),
        ("tkn-subnets", "DB subnet group tkn-subnets-db-subnets"),
    ];
    for (prefix, named) in cases {
        match prefix {
            "tkn-logs" => {
                logs.create_log_group()
                    .log_group_name("/ihp/tkn-logs")
                    .send()
                    .await
                    .unwrap();
            }
            "tkn-role" => {
                iam.create_role()
                    .role_name("tkn-role-app-role")
                    .assume_role_policy_document(trust)
                    .send()
                    .await
                    .unwrap();
            }
            "tkn-pol" => {
                iam.create_policy()
                    .policy_name("tkn-pol-s3-access")
                    .policy_document(policy)
                    .send()
                    .await
                    .unwrap();
            }
            "tkn-prof" => {
                iam.create_instance_profile()
                    .instance_profile_name("tkn-prof-app-profile")
                    .send()
                    .await
                    .unwrap();
            }
            _ => {
                rds.create_db_subnet_group()
                    .db_subnet_group_name("tkn-subnets-db-subnets")
                    .db_subnet_group_description("someone else's")
                    .set_subnet_ids(Some(subnet.clone()))
                    .send()
                    .await
                    .unwrap();
            }
        }
        let p = Project::with_stack(&emulator.endpoint(), prefix, REGION);
        for args in [
            &["plan"][..],
            &["apply", "--auto-approve"],
            &["destroy", "--auto-approve"],
        ] {
            let out = p.run_ok(args, 1);
            assert!(
                out.stderr
                    .contains(&format!("{named} exists but is not part of stack {prefix}")),
                "{args:?}: {out:?}"
            );
        }
        // Refused before anything was made or changed.
        let made = tagged(&emulator, prefix).await;
        assert!(made.is_empty(), "{prefix}: {made:?}");
    }
    // Each one left as it was: untagged, nothing attached.
    let group = logs
        .describe_log_groups()
        .log_group_name_prefix("/ihp/tkn-logs")
        .send()
        .await
        .unwrap();
    assert_eq!(group.log_groups()[0].retention_in_days(), None);
    let attached = iam
        .list_attached_role_policies()
        .role_name("tkn-role-app-role")
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty());
    let profile = iam
        .get_instance_profile()
        .instance_profile_name("tkn-prof-app-profile")
        .send()
        .await
        .unwrap();
    assert!(profile.instance_profile().unwrap().roles().is_empty());
    let groups = rds
        .describe_db_subnet_groups()
        .db_subnet_group_name("tkn-subnets-db-subnets")
        .send()
        .await
        .unwrap();
    assert_eq!(
        groups.db_subnet_groups()[0].db_subnet_group_description(),
        Some("someone else's")
    );
}

#[tokio::test]
async fn final_snapshot_name_taken_in_the_same_second_gets_a_suffix() {
    // Found by running destroy twice within one second: DBSnapshotAlreadyExists.
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "again", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);
    // Take the names of this second and the next few.
    let now = std::time::SystemTime::now();
    for s in 0..5 {
        let name = ihp_infra::aws::rds::final_snapshot_name(
            "again-postgres-db",
            now + std::time::Duration::from_secs(s),
        );
        rds.create_db_snapshot()
            .db_instance_identifier("again-postgres-db")
            .db_snapshot_identifier(name)
            .send()
            .await
            .unwrap();
    }
    let out = p.run_ok(&["destroy", "--auto-approve"], 0);
    let kept = out
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("kept: final snapshot "))
        .unwrap_or_else(|| panic!("{out:?}"))
        .to_string();
    assert!(kept.ends_with("-2"), "{kept}");
    let snapshots = rds.describe_db_snapshots().send().await.unwrap();
    assert!(
        snapshots
            .db_snapshots()
            .iter()
            .any(|s| s.db_snapshot_identifier() == Some(kept.as_str()))
    );
}
