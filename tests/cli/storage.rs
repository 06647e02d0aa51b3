//! S3, IAM and CloudWatch Logs: what the console steps made by hand.

use std::os::unix::fs::PermissionsExt;

use aws_sdk_s3::primitives::ByteStream;

use crate::common::{Emulator, Needs, Project, bare_stack_yaml, is_write};
use crate::network::tagged;

const REGION: &str = "eu-central-1";

/// A stack for the storage tests: without server and database (they are
/// not what these tests are about), so they run on every emulator.
fn with(p: &Project, prefix: &str, extra: &str) {
    p.write(
        "stack.yaml",
        &format!("{}{extra}", bare_stack_yaml(prefix, REGION)),
    );
}

fn bare(emulator: &Emulator, prefix: &str) -> Project {
    let p = Project::new(&emulator.endpoint());
    with(&p, prefix, "");
    p
}

fn policy_arn(emulator: &Emulator, name: &str) -> String {
    format!("arn:aws:iam::{}:policy/{name}", emulator.account())
}

async fn default_document(iam: &aws_sdk_iam::Client, arn: &str) -> serde_json::Value {
    let policy = iam.get_policy().policy_arn(arn).send().await.unwrap();
    let version = policy
        .policy()
        .unwrap()
        .default_version_id()
        .unwrap()
        .to_string();
    let doc = iam
        .get_policy_version()
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
        .unwrap();
    let text = doc
        .policy_version()
        .unwrap()
        .document()
        .unwrap()
        .to_string();
    let text = percent_encoding::percent_decode_str(&text)
        .decode_utf8()
        .unwrap()
        .into_owned();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn bucket_log_group_and_iam_as_asked() {
    let emulator = Emulator::start();
    let ec2 = emulator.ec2_with_key(REGION).await;
    let (s3, logs, iam) = (
        emulator.s3(REGION).await,
        emulator.logs(REGION).await,
        emulator.iam().await,
    );
    let p = emulator.project("acc", REGION);
    p.run_ok(&["apply", "--auto-approve"], 0);

    // The bucket: in the stack's region, encrypted, public access blocked.
    let location = s3
        .get_bucket_location()
        .bucket("acc-storage")
        .send()
        .await
        .unwrap();
    assert_eq!(
        location.location_constraint().map(|l| l.as_str()),
        Some(REGION)
    );
    let encryption = s3
        .get_bucket_encryption()
        .bucket("acc-storage")
        .send()
        .await
        .unwrap();
    let rule = &encryption
        .server_side_encryption_configuration()
        .unwrap()
        .rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm()
            .as_str(),
        "AES256"
    );
    let block = s3
        .get_public_access_block()
        .bucket("acc-storage")
        .send()
        .await
        .unwrap();
    let block = block.public_access_block_configuration().unwrap();
    assert_eq!(block.block_public_policy(), Some(true));
    assert_eq!(block.restrict_public_buckets(), Some(true));
    assert!(
        s3.get_bucket_policy()
            .bucket("acc-storage")
            .send()
            .await
            .is_err(),
        "no public policy"
    );

    // The log group: 30 days by default, tagged at creation.
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/ihp/acc")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(30));

    // The policies, filled with the stack's ARNs.
    let s3_doc = default_document(&iam, &policy_arn(&emulator, "acc-s3-access")).await;
    assert_eq!(s3_doc["Statement"][0]["Action"], "s3:*");
    assert_eq!(
        s3_doc["Statement"][0]["Resource"],
        serde_json::json!(["arn:aws:s3:::acc-storage", "arn:aws:s3:::acc-storage/*"])
    );
    let logs_doc = default_document(&iam, &policy_arn(&emulator, "acc-cloudwatch-logs")).await;
    let group = format!(
        "arn:aws:logs:eu-central-1:{}:log-group:/ihp/acc",
        emulator.account()
    );
    assert_eq!(
        logs_doc["Statement"][0]["Resource"],
        serde_json::json!([group.clone(), format!("{group}:*")])
    );

    // The server may read its stack's parameters, and nothing else of SSM.
    let ssm_doc = default_document(&iam, &policy_arn(&emulator, "acc-ssm-read")).await;
    let path = format!(
        "arn:aws:ssm:eu-central-1:{}:parameter/ihp-infra/acc",
        emulator.account()
    );
    assert_eq!(
        ssm_doc["Statement"][0]["Resource"],
        serde_json::json!([path.clone(), format!("{path}/*")])
    );

    // The role has all three, the profile has the role, the server has the profile.
    let attached = iam
        .list_attached_role_policies()
        .role_name("acc-app-role")
        .send()
        .await
        .unwrap();
    let mut arns: Vec<_> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .collect();
    arns.sort();
    assert_eq!(
        arns,
        [
            policy_arn(&emulator, "acc-cloudwatch-logs"),
            policy_arn(&emulator, "acc-s3-access"),
            policy_arn(&emulator, "acc-ssm-read")
        ]
    );
    let profile = iam
        .get_instance_profile()
        .instance_profile_name("acc-app-profile")
        .send()
        .await
        .unwrap();
    assert_eq!(
        profile.instance_profile().unwrap().roles()[0].role_name(),
        "acc-app-role"
    );
    // (LocalStack community launches no server with a profile.)
    if emulator.serves_whole_stack() {
        let instances = ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let server = &instances.reservations()[0].instances()[0];
        assert!(
            server
                .iam_instance_profile()
                .and_then(|p| p.arn())
                .unwrap()
                .ends_with("/acc-app-profile"),
            "{server:?}"
        );
    }

    // What the NixOS configuration needs, for people and for scripts.
    let out = p.run_ok(&["output"], 0);
    assert!(
        out.stdout.contains(
            "AWS_REGION=eu-central-1\nS3_BUCKET=acc-storage\nCLOUDWATCH_LOG_GROUP=/ihp/acc\n"
        ),
        "{out:?}"
    );
    let out = p.run_ok(&["output", "--json"], 0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["bucket"], "acc-storage");
    assert_eq!(json["log_group"], "/ihp/acc");
    if emulator.serves_whole_stack() {
        assert!(json["instance_dns"].as_str().unwrap().contains("compute"));
    } else {
        assert_eq!(json["instance_dns"], serde_json::Value::Null);
    }
}

#[tokio::test]
async fn public_read_is_a_get_object_bucket_policy_and_can_be_taken_back() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "pub", "storage:\n  public_read: true\n");
    p.run_ok(&["apply", "--auto-approve"], 0);
    let policy = s3
        .get_bucket_policy()
        .bucket("pub-storage")
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1);
    assert_eq!(policy["Statement"][0]["Action"], "s3:GetObject");
    assert_eq!(policy["Statement"][0]["Principal"], "*");
    assert_eq!(
        policy["Statement"][0]["Resource"],
        "arn:aws:s3:::pub-storage/*"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    with(&p, "pub", "");
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.stdout.contains("block_public_access   false -> true"),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert!(
        s3.get_bucket_policy()
            .bucket("pub-storage")
            .send()
            .await
            .is_err()
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

#[tokio::test]
async fn changed_policy_is_a_new_default_version_pruned_at_five() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let iam = emulator.iam().await;
    let p = Project::new(&emulator.endpoint());
    let arn = policy_arn(&emulator, "ver-cloudwatch-logs");
    for n in 1..=7 {
        with(
            &p,
            "ver",
            &format!("logs:\n  group: /ihp/ver-{n}\n  retention_days: 14\n"),
        );
        p.run_ok(&["apply", "--auto-approve"], 0);
        let versions = iam
            .list_policy_versions()
            .policy_arn(&arn)
            .send()
            .await
            .unwrap();
        assert_eq!(
            versions.versions().len(),
            n.min(5),
            "AWS keeps at most five versions"
        );
    }
    let doc = default_document(&iam, &arn).await;
    assert!(
        doc["Statement"][0]["Resource"][0]
            .as_str()
            .unwrap()
            .ends_with(":log-group:/ihp/ver-7")
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let logs = emulator.logs(REGION).await;
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/ihp/ver-")
        .send()
        .await
        .unwrap();
    let names: Vec<_> = groups
        .log_groups()
        .iter()
        .filter_map(|g| g.log_group_name())
        .collect();
    assert_eq!(
        names,
        ["/ihp/ver-7"],
        "a renamed group replaces the old one"
    );
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(14));
}

#[tokio::test]
async fn access_key_secret_is_written_once_to_a_private_file() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let iam = emulator.iam().await;
    let p = Project::new(&emulator.endpoint());
    with(
        &p,
        "key",
        "storage:\n  access_key: true\n  key_file: true\n",
    );
    let apply = p.run_ok(&["apply", "--auto-approve"], 0);
    // Regression: the key carries no tags, and a plan wanted to set them.
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let path = p.dir.path().join("s3_access_key.env");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let keys = iam
        .list_access_keys()
        .user_name("key-s3-user")
        .send()
        .await
        .unwrap();
    let key_id = keys.access_key_metadata()[0].access_key_id().unwrap();
    assert!(
        text.contains(&format!("AWS_ACCESS_KEY_ID={key_id}\n")),
        "{text}"
    );
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("AWS_SECRET_ACCESS_KEY="))
        .unwrap();
    assert!(secret.len() >= 20);
    assert!(!apply.all().contains(secret), "the secret was printed");
    assert!(text.ends_with("AWS_REGION=eu-central-1\nS3_BUCKET=key-storage\n"));
    let attached = iam
        .list_attached_user_policies()
        .user_name("key-s3-user")
        .send()
        .await
        .unwrap();
    assert_eq!(
        attached.attached_policies()[0].policy_arn(),
        Some(policy_arn(&emulator, "key-s3-access").as_str())
    );
    let out = p.run_ok(&["output"], 0);
    assert!(out.stdout.contains("S3_ACCESS_KEY_FILE="), "{out:?}");
    assert!(!out.stdout.contains(secret));

    // A second apply leaves key and file alone.
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // Rotation: delete the key, apply makes a new one and writes it.
    iam.delete_access_key()
        .user_name("key-s3-user")
        .access_key_id(key_id)
        .send()
        .await
        .unwrap();
    let plan = p.run_ok(&["plan"], 0);
    assert!(plan.stdout.contains("+ access_key.s3-user-key"), "{plan:?}");
    // At trace level, with the SDK asked to log bodies: still never the secret.
    let out = p
        .command(&["apply", "--auto-approve"])
        .env("IHP_INFRA_LOG", "trace")
        .env("LOG_SIGNABLE_BODY", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let rotated = std::fs::read_to_string(&path).unwrap();
    assert_ne!(rotated, text);
    assert!(!rotated.contains(key_id));
    let new_secret = rotated
        .lines()
        .find_map(|l| l.strip_prefix("AWS_SECRET_ACCESS_KEY="))
        .unwrap();
    let logged = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    assert!(logged.contains("CreateAccessKey"), "trace logging is on");
    assert!(!logged.contains(new_secret), "the secret was logged");

    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert!(tagged(&emulator, "key").await.is_empty());
}

#[tokio::test]
async fn destroy_stops_before_anything_when_the_bucket_has_objects() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    let p = bare(&emulator, "full");
    p.run_ok(&["apply", "--auto-approve"], 0);
    s3.put_object()
        .bucket("full-storage")
        .key("uploads/avatar.png")
        .body(ByteStream::from_static(b"png"))
        .send()
        .await
        .unwrap();

    let before = emulator.actions().len();
    let out = p.run_ok(&["destroy", "--auto-approve"], 1);
    assert!(
        out.stderr
            .contains("bucket full-storage still holds 1 object versions"),
        "{out:?}"
    );
    assert!(out.stderr.contains("--delete-bucket-contents"), "{out:?}");
    let writes: Vec<_> = emulator.actions()[before..]
        .iter()
        .filter(|a| is_write(a))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "nothing deleted: {writes:?}");
    assert_eq!(tagged(&emulator, "full").await.len(), 18);

    p.run_ok(
        &["destroy", "--auto-approve", "--delete-bucket-contents"],
        0,
    );
    assert!(tagged(&emulator, "full").await.is_empty());
}

#[tokio::test]
async fn versions_and_delete_markers_count_as_contents() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    let p = bare(&emulator, "vers");
    p.run_ok(&["apply", "--auto-approve"], 0);
    s3.put_bucket_versioning()
        .bucket("vers-storage")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("vers-storage")
        .key("a")
        .body(ByteStream::from_static(b"1"))
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket("vers-storage")
        .key("a")
        .send()
        .await
        .unwrap();
    let out = p.run_ok(&["destroy", "--auto-approve"], 1);
    assert!(
        out.stderr.contains("still holds 2 object versions"),
        "{out:?}"
    );
    p.run_ok(
        &["destroy", "--auto-approve", "--delete-bucket-contents"],
        0,
    );
    assert!(tagged(&emulator, "vers").await.is_empty());
}

#[tokio::test]
async fn bucket_not_tagged_for_the_stack_is_not_taken_over() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    s3.create_bucket()
        .bucket("mine-storage")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let p = bare(&emulator, "mine");
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr
            .contains("bucket mine-storage exists in this account but is not part of stack mine"),
        "{out:?}"
    );
    // Another name in the stack file gets past it.
    with(&p, "mine", "storage:\n  bucket: mine-other-files\n");
    let out = p.run_ok(&["plan"], 0);
    assert!(
        out.stdout.contains("bucket.storage mine-storage"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("name                = \"mine-other-files\""),
        "{out:?}"
    );
}

#[tokio::test]
async fn us_east_1_bucket_has_no_location_constraint() {
    let emulator = Emulator::start();
    emulator.ec2_with_key("us-east-1").await;
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &bare_stack_yaml("east", "us-east-1"));
    p.run_ok(&["apply", "--auto-approve"], 0);
    let s3 = emulator.s3("us-east-1").await;
    let location = s3
        .get_bucket_location()
        .bucket("east-storage")
        .send()
        .await
        .unwrap();
    assert!(
        location
            .location_constraint()
            .is_none_or(|l| l.as_str().is_empty()),
        "{location:?}"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

#[tokio::test]
async fn renamed_bucket_is_not_orphaned_and_never_emptied_unasked() {
    // Found when a renamed log group stayed behind: resources the stack file
    // no longer names are found by their tag and cleaned up.
    let Some(emulator) = Emulator::start_for(&[Needs::BucketsByTag]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    let p = bare(&emulator, "ren");
    p.run_ok(&["apply", "--auto-approve"], 0);
    s3.put_object()
        .bucket("ren-storage")
        .key("keep.txt")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap();

    with(&p, "ren", "storage:\n  bucket: ren-files\n");
    let out = p.run_ok(&["apply", "--auto-approve"], 1);
    assert!(
        out.stderr
            .contains("bucket ren-storage still holds 1 object versions"),
        "{out:?}"
    );
    assert!(
        s3.head_bucket().bucket("ren-files").send().await.is_err(),
        "nothing was made"
    );

    s3.delete_object()
        .bucket("ren-storage")
        .key("keep.txt")
        .send()
        .await
        .unwrap();
    let plan = p.run_ok(&["plan"], 0);
    assert!(plan.stdout.contains("- bucket.ren-storage"), "{plan:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert!(
        s3.head_bucket().bucket("ren-storage").send().await.is_err(),
        "the old bucket is gone"
    );
    assert!(s3.head_bucket().bucket("ren-files").send().await.is_ok());
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}

#[tokio::test]
async fn bucket_name_taken_by_another_account_is_a_clear_error() {
    let Some(emulator) = Emulator::start_for(&[Needs::IsolatedAccounts]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let s3 = emulator.s3(REGION).await;
    // moto serves another account for requests that name it.
    s3.create_bucket()
        .bucket("taken-storage")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-moto-account-id", "111111111111");
        })
        .send()
        .await
        .unwrap();
    let p = emulator.project("taken", REGION);
    let out = p.run(&["apply", "--auto-approve"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the bucket name taken-storage is taken by another AWS account"),
        "{out:?}"
    );
    assert!(out.stderr.contains("set storage.bucket"), "{out:?}");
}

#[tokio::test]
async fn endpoint_named_by_host_name_works_as_localstack_users_set_it() {
    // http://localhost:PORT, not 127.0.0.1: S3 must not try <bucket>.localhost.
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&format!("http://localhost:{}", emulator.port));
    with(&p, "host", "");
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert!(tagged(&emulator, "host").await.is_empty());
}
