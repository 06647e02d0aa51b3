//! Backups of Postgres on the server: a versioned bucket the server may
//! only add to, replaced dumps expiring, and destroy keeping it.

use aws_sdk_s3::primitives::ByteStream;

use crate::common::{Emulator, Needs, Project, stack_yaml};

const REGION: &str = "eu-central-1";

fn with(p: &Project, prefix: &str, extra: &str) {
    p.write(
        "stack.yaml",
        &format!(
            "{}database: {{ enabled: false }}\n{extra}",
            stack_yaml(prefix, REGION)
        ),
    );
}

#[tokio::test]
async fn backups_bucket_is_versioned_expires_old_dumps_and_outlives_destroy() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    let iam = emulator.iam().await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "bak", "backups: { retention_days: 14 }\n");
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    let versioning = s3
        .get_bucket_versioning()
        .bucket("bak-backups")
        .send()
        .await
        .unwrap();
    assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"));
    let lifecycle = s3
        .get_bucket_lifecycle_configuration()
        .bucket("bak-backups")
        .send()
        .await
        .unwrap();
    let rule = &lifecycle.rules()[0];
    assert_eq!(
        rule.noncurrent_version_expiration()
            .and_then(|e| e.noncurrent_days()),
        Some(14)
    );
    assert_eq!(rule.expiration(), None, "the newest dump never expires");
    let block = s3
        .get_public_access_block()
        .bucket("bak-backups")
        .send()
        .await
        .unwrap();
    let block = block.public_access_block_configuration().unwrap();
    assert_eq!(block.block_public_policy(), Some(true));
    assert_eq!(block.restrict_public_buckets(), Some(true));

    // The server's role may list and add, nothing else.
    let attached = iam
        .list_attached_role_policies()
        .role_name("bak-app-role")
        .send()
        .await
        .unwrap();
    let arn = attached
        .attached_policies()
        .iter()
        .find(|a| a.policy_name() == Some("bak-backups-write"))
        .and_then(|a| a.policy_arn())
        .unwrap()
        .to_string();
    let version = iam.get_policy().policy_arn(&arn).send().await.unwrap();
    let version = version
        .policy()
        .unwrap()
        .default_version_id()
        .unwrap()
        .to_string();
    let document = iam
        .get_policy_version()
        .policy_arn(&arn)
        .version_id(version)
        .send()
        .await
        .unwrap();
    let document = document.policy_version().unwrap().document().unwrap();
    let document = percent_encoding::percent_decode_str(document)
        .decode_utf8()
        .unwrap();
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let actions: Vec<&str> = document["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["s3:ListBucket", "s3:PutObject"]);

    // The module dumps daily and copies the dumps there.
    let module = std::fs::read_to_string(p.dir.path().join("ihp-infra.nix")).unwrap();
    assert!(
        module.contains("services.postgresqlBackup.enable = true;")
            && module.contains(
                "aws s3 sync ${config.services.postgresqlBackup.location} s3://bak-backups/"
            ),
        "{module}"
    );

    // A dump arrives. Turning backups off takes the role's access away but
    // keeps the bucket and its dumps; turned on again, it is the same one.
    s3.put_object()
        .bucket("bak-backups")
        .key("all.sql.gz")
        .body(ByteStream::from_static(b"dump"))
        .send()
        .await
        .unwrap();
    with(&p, "bak", "");
    let out = p.run_ok(&["apply", "--auto-approve"], 0);
    assert!(
        out.stdout.contains("- iam_policy.backups-write") && !out.stdout.contains("bucket.backups"),
        "{out:?}"
    );
    s3.head_object()
        .bucket("bak-backups")
        .key("all.sql.gz")
        .send()
        .await
        .unwrap();
    with(&p, "bak", "backups: { retention_days: 14 }\n");
    let out = p.run_ok(&["apply", "--auto-approve"], 0);
    assert!(
        out.stdout.contains("+ iam_policy.backups-write")
            && !out.stdout.contains("+ bucket.backups"),
        "{out:?}"
    );

    // Destroy keeps the bucket and says so; --delete-backups takes it.
    let out = p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert!(
        out.stdout.contains(
            "The backups bucket bak-backups stays, with its dumps; --delete-backups deletes it too."
        ),
        "{out:?}"
    );
    assert!(!out.stdout.contains("bucket.backups"), "{out:?}");
    s3.head_bucket().bucket("bak-backups").send().await.unwrap();
    let out = p.run_ok(
        &[
            "destroy",
            "--auto-approve",
            "--skip-final-snapshot",
            "--delete-backups",
        ],
        0,
    );
    assert!(out.stdout.contains("- bucket.backups"), "{out:?}");
    assert!(s3.head_bucket().bucket("bak-backups").send().await.is_err());
}
