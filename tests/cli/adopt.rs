//! `ihp-infra adopt`: a stack made as the IHP boilerplate's Terraform
//! makes it (`IaC/aws` of ihp-boilerplate, branch IaC-aws) is taken over
//! with nothing replaced: made here with the SDK call by call as that
//! Terraform makes it, and once by Terraform itself (tests/terraform).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, EbsBlockDevice, Filter, InstanceType, IpPermission,
    IpRange, ResourceType, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};

use crate::common::{Emulator, FULL_STACK, PASSWORD, Project};
use crate::proxy::{Options, Proxy, Request, Stage};

const REGION: &str = "eu-central-1";
/// An older NixOS image of the fixture: the boilerplate pins one.
const PINNED_AMI: &str = "ami-0a11c0ffee0251101";

/// The ids of what the boilerplate's Terraform made.
#[derive(Debug)]
struct Boilerplate {
    vpc: String,
    igw: String,
    public: String,
    private_1: String,
    private_2: String,
    route_table: String,
    ec2_sg: String,
    rds_sg: String,
    instance: String,
    database: String,
}

fn named(kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

fn tcp(port: i32, cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

/// The boilerplate's resources, as its main.tf makes them.
async fn boilerplate(emulator: &Emulator, prefix: &str) -> Boilerplate {
    let ec2 = emulator.ec2_with_key(REGION).await;
    let rds = emulator.rds(REGION).await;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .tag_specifications(named(ResourceType::Vpc, &format!("{prefix}-main")))
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    for hostnames in [false, true] {
        let call = ec2.modify_vpc_attribute().vpc_id(&vpc);
        let on = AttributeBooleanValue::builder().value(true).build();
        let call = if hostnames {
            call.enable_dns_hostnames(on)
        } else {
            call.enable_dns_support(on)
        };
        call.send().await.unwrap();
    }
    let igw = ec2
        .create_internet_gateway()
        .tag_specifications(named(
            ResourceType::InternetGateway,
            &format!("{prefix}-main"),
        ))
        .send()
        .await
        .unwrap()
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let mut subnets = Vec::new();
    for (cidr, az, name) in [
        ("10.0.1.0/24", "a", "public"),
        ("10.0.2.0/24", "a", "private-1"),
        ("10.0.3.0/24", "b", "private-2"),
    ] {
        let id = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(format!("{REGION}{az}"))
            .tag_specifications(named(ResourceType::Subnet, &format!("{prefix}-{name}")))
            .send()
            .await
            .unwrap()
            .subnet()
            .unwrap()
            .subnet_id()
            .unwrap()
            .to_string();
        subnets.push(id);
    }
    ec2.modify_subnet_attribute()
        .subnet_id(&subnets[0])
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .unwrap();
    let route_table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .tag_specifications(named(ResourceType::RouteTable, &format!("{prefix}-public")))
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    ec2.create_route()
        .route_table_id(&route_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    ec2.associate_route_table()
        .route_table_id(&route_table)
        .subnet_id(&subnets[0])
        .send()
        .await
        .unwrap();
    // ec2_sg has no name in main.tf: Terraform makes one up.
    let ec2_sg = ec2
        .create_security_group()
        .group_name("terraform-20240612093045123400000001")
        .description("Managed by Terraform")
        .vpc_id(&vpc)
        .tag_specifications(named(
            ResourceType::SecurityGroup,
            &format!("{prefix}-ec2_sg"),
        ))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&ec2_sg)
        .set_ip_permissions(Some([22, 80, 443].map(|p| tcp(p, "0.0.0.0/0")).to_vec()))
        .send()
        .await
        .unwrap();
    // Terraform removes the default allow-all egress and sets its own.
    ec2.revoke_security_group_egress()
        .group_id(&ec2_sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    ec2.authorize_security_group_egress()
        .group_id(&ec2_sg)
        .set_ip_permissions(Some(
            [22, 80, 443, 5432].map(|p| tcp(p, "0.0.0.0/0")).to_vec(),
        ))
        .send()
        .await
        .unwrap();
    let rds_sg = ec2
        .create_security_group()
        .group_name("terraform-20240612093045123400000002")
        .description("Managed by Terraform")
        .vpc_id(&vpc)
        .tag_specifications(named(
            ResourceType::SecurityGroup,
            &format!("{prefix}-rds_sg"),
        ))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&rds_sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(5432)
                .to_port(5432)
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(&ec2_sg).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance = ec2
        .run_instances()
        .image_id(PINNED_AMI)
        .instance_type(InstanceType::T3Medium)
        .key_name(crate::common::KEY_NAME)
        .subnet_id(&subnets[0])
        .security_group_ids(&ec2_sg)
        .min_count(1)
        .max_count(1)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(30)
                        .volume_type(VolumeType::Gp2)
                        .encrypted(false)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(named(ResourceType::Instance, &format!("{prefix}-ihp_app")))
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    rds.create_db_subnet_group()
        .db_subnet_group_name("main")
        .db_subnet_group_description("Managed by Terraform")
        .subnet_ids(&subnets[1])
        .subnet_ids(&subnets[2])
        .tags(
            aws_sdk_rds::types::Tag::builder()
                .key("Name")
                .value(format!("{prefix}-main"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let database = format!("{prefix}-postgres-db");
    rds.create_db_instance()
        .db_instance_identifier(&database)
        .engine("postgres")
        .engine_version("16.3")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("postgres_user")
        .master_user_password(PASSWORD)
        .db_subnet_group_name("main")
        .vpc_security_group_ids(&rds_sg)
        .publicly_accessible(false)
        .storage_encrypted(false)
        .tags(
            aws_sdk_rds::types::Tag::builder()
                .key("Name")
                .value(format!("{prefix}-PostgresDB"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    Boilerplate {
        vpc,
        igw,
        public: subnets[0].clone(),
        private_1: subnets[1].clone(),
        private_2: subnets[2].clone(),
        route_table,
        ec2_sg,
        rds_sg,
        instance,
        database,
    }
}

/// A terraform.tfstate (version 4) as Terraform writes it for these ids,
/// with the password in clear as Terraform keeps it.
fn state_file(b: &Boilerplate, password: &str) -> String {
    let resource = |ty: &str, name: &str, attributes: serde_json::Value| {
        serde_json::json!({
            "mode": "managed", "type": ty, "name": name,
            "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
            "instances": [{"schema_version": 1, "attributes": attributes}]
        })
    };
    serde_json::json!({
        "version": 4, "terraform_version": "1.11.4", "serial": 12, "lineage": "x",
        "outputs": {},
        "resources": [
            resource("aws_vpc", "main", serde_json::json!({"id": b.vpc, "cidr_block": "10.0.0.0/16"})),
            resource("aws_internet_gateway", "main", serde_json::json!({"id": b.igw})),
            resource("aws_subnet", "public", serde_json::json!({"id": b.public})),
            resource("aws_subnet", "private_1", serde_json::json!({"id": b.private_1})),
            resource("aws_subnet", "private_2", serde_json::json!({"id": b.private_2})),
            resource("aws_route_table", "public", serde_json::json!({"id": b.route_table})),
            resource("aws_security_group", "ec2_sg", serde_json::json!({"id": b.ec2_sg})),
            resource("aws_security_group", "rds_sg", serde_json::json!({"id": b.rds_sg})),
            resource("aws_instance", "ihp_app", serde_json::json!({"id": b.instance})),
            resource("aws_db_subnet_group", "main", serde_json::json!({"id": "main", "name": "main"})),
            resource("aws_db_instance", "postgres", serde_json::json!({
                "id": "db-ABCDEFGHIJKLMNOPQRSTUVWXY", "identifier": b.database,
                "username": "postgres_user", "password": password
            })),
        ]
    })
    .to_string()
}

/// `adopt --from-terraform terraform.tfstate --auto-approve`, exiting `code`.
fn adopt_state(p: &Project, code: i32) -> crate::common::Output {
    p.run_ok(
        &[
            "adopt",
            "--from-terraform",
            "terraform.tfstate",
            "--auto-approve",
        ],
        code,
    )
}

/// Every id the stack's tag finds, by kind and id.
async fn ours(emulator: &Emulator, prefix: &str) -> Vec<String> {
    crate::network::tagged(emulator, prefix).await
}

/// The writes the emulator recorded after the first `skip` actions.
fn actions_after(emulator: &Emulator, skip: usize) -> Vec<String> {
    emulator.actions().into_iter().skip(skip).collect()
}

const REPLACING: [&str; 4] = [
    "CreateDBInstance",
    "DeleteDBInstance",
    "RunInstances",
    "TerminateInstances",
];

/// The actions recorded after the first `skip`, once checked to hold no
/// create or delete of a database or server.
fn nothing_replaced_since(emulator: &Emulator, skip: usize) -> Vec<String> {
    let after = actions_after(emulator, skip);
    for action in REPLACING {
        assert!(!after.contains(&action.to_string()), "{action}: {after:?}");
    }
    after
}

#[tokio::test]
async fn adopt_from_a_terraform_state_keeps_every_id_and_then_apply_converges() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let b = boilerplate(&emulator, "tf").await;
    let p = Project::with_stack(&emulator.endpoint(), "tf", REGION);
    p.write("terraform.tfstate", &state_file(&b, PASSWORD));

    // Before: the untagged database with the stack's identifier stops a plan.
    let out = p.run_ok(&["plan"], 1);
    assert!(out.stderr.contains("not part of stack tf"), "{out:?}");

    let before = emulator.actions().len();
    let out = adopt_state(&p, 0);
    for (address, id, was) in [
        ("vpc.vpc", &b.vpc, "aws_vpc.main"),
        ("subnet.private-2", &b.private_2, "aws_subnet.private_2"),
        ("security_group.app", &b.ec2_sg, "aws_security_group.ec2_sg"),
        ("instance.app", &b.instance, "aws_instance.ihp_app"),
        (
            "database.postgres-db",
            &b.database,
            "aws_db_instance.postgres",
        ),
        (
            "db_subnet_group.db-subnets",
            &"main".to_string(),
            "aws_db_subnet_group.main",
        ),
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(address))
            .unwrap_or_else(|| panic!("{address} is not taken over: {out:?}"));
        assert!(line.contains(id.as_str()) && line.contains(was), "{line}");
    }
    assert!(
        out.stdout
            .contains("matches the password in the Terraform state"),
        "{out:?}"
    );
    // The whole of what adopt shows, ids filtered.
    insta::with_settings!({ filters => crate::common::id_filters() }, {
        insta::assert_snapshot!("adopt_from_terraform", out.stdout);
    });
    let stack = std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap();
    for setting in [
        format!("  ami: {PINNED_AMI}"),
        "  root_volume_encrypted: false".into(),
        "  storage_encrypted: false".into(),
        "  subnet_group: \"main\"".into(),
    ] {
        assert!(stack.contains(&setting), "{setting} in\n{stack}");
    }
    // The plan that follows, shown before anything changed: in place only.
    assert!(
        out.stdout.contains("Then `ihp-infra apply` makes"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("must be replaced"), "{out:?}");
    assert!(out.stdout.contains("http_tokens"), "IMDSv2 comes: {out:?}");
    let adopted = actions_after(&emulator, before);
    assert!(
        adopted.iter().all(|a| !crate::common::is_write(a)
            || a == "CreateTags"
            || a == "AddTagsToResource"
            || a == "CreateLogGroup"
            || a == "DeleteLogGroup"
            || a == "PutRetentionPolicy"),
        "adopt only tags (and locks): {adopted:?}"
    );

    p.run_ok(&["apply", "--auto-approve"], 0);
    let out = p.run_ok(&["plan", "--detailed-exitcode"], 0);
    assert!(out.stdout.contains("No changes"), "{out:?}");
    nothing_replaced_since(&emulator, before);
    assert!(
        !emulator
            .sent("ModifyDBInstance")
            .iter()
            .any(|call| call.contains_key("MasterUserPassword")),
        "the matched password is kept"
    );
    // Every one of them is the stack's now, by the same id.
    let tagged = ours(&emulator, "tf").await;
    for id in [
        &b.vpc,
        &b.igw,
        &b.public,
        &b.private_1,
        &b.private_2,
        &b.route_table,
        &b.ec2_sg,
        &b.rds_sg,
        &b.instance,
        &b.database,
    ] {
        assert!(tagged.contains(id), "{id} is not the stack's: {tagged:?}");
    }
    let ec2 = emulator.ec2(REGION).await;
    let egress = ec2
        .describe_security_groups()
        .group_ids(&b.ec2_sg)
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .ip_permissions_egress()
        .iter()
        .filter_map(|p| p.from_port())
        .collect::<std::collections::BTreeSet<_>>();
    assert!(egress.contains(&587) && egress.contains(&465), "{egress:?}");
    let volume = ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(&b.instance)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let volume = &volume.volumes()[0];
    assert_eq!(volume.size(), Some(60), "the disk grew in place");
    assert_eq!(volume.volume_type().map(|t| t.as_str()), Some("gp3"));

    // Adopting again finds nothing to do.
    let out = adopt_state(&p, 0);
    assert!(out.stderr.contains("adopted already"), "{out:?}");
}

#[tokio::test]
async fn adopt_without_a_state_finds_the_boilerplate_by_name_and_resets_the_password() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let b = boilerplate(&emulator, "byname").await;
    // The bucket and log group IHP's guide had you make in the console.
    let s3 = emulator.s3(REGION).await;
    s3.create_bucket()
        .bucket("byname-storage")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.put_bucket_tagging()
        .bucket("byname-storage")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key("owner")
                        .value("web-team")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    emulator
        .logs(REGION)
        .await
        .create_log_group()
        .log_group_name("/ihp/byname")
        .send()
        .await
        .unwrap();
    // A route table deleted by hand: adopt says it found none.
    let ec2 = emulator.ec2(REGION).await;
    let table = ec2
        .describe_route_tables()
        .route_table_ids(&b.route_table)
        .send()
        .await
        .unwrap();
    for a in table.route_tables()[0].associations() {
        ec2.disassociate_route_table()
            .association_id(a.route_table_association_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    ec2.delete_route_table()
        .route_table_id(&b.route_table)
        .send()
        .await
        .unwrap();
    let p = Project::with_stack(&emulator.endpoint(), "byname", REGION);
    let before = emulator.actions().len();

    // Without a terminal, adopt asks and refuses: nothing is tagged.
    let out = p.run_ok(&["adopt"], 1);
    assert!(out.stderr.contains("--auto-approve"), "{out:?}");
    assert!(ours(&emulator, "byname").await.is_empty());

    let out = p.run_ok(&["adopt", "--auto-approve"], 0);
    assert!(
        out.stdout
            .contains("no Terraform state to compare db_password with"),
        "{out:?}"
    );
    assert!(out.stdout.contains("(was Name=byname-ihp_app)"), "{out:?}");
    assert!(
        out.stdout
            .contains("not found, so apply creates them: route_table.public-rt"),
        "{out:?}"
    );
    for taken in ["bucket.storage", "log_group.logs"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(taken)),
            "{taken}: {out:?}"
        );
    }
    let tags = s3
        .get_bucket_tagging()
        .bucket("byname-storage")
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert!(
        tags.contains(&("owner", "web-team")) && tags.contains(&("ihp-infra:stack", "byname")),
        "the bucket's own tags stay: {tags:?}"
    );
    let plan = p.run_ok(&["plan"], 0);
    assert!(plan.stdout.contains("password"), "{plan:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert!(
        emulator
            .sent("ModifyDBInstance")
            .iter()
            .any(|call| call.contains_key("MasterUserPassword")),
        "db_password became the master password"
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let tagged = ours(&emulator, "byname").await;
    assert!(tagged.contains(&b.instance) && tagged.contains(&b.database));
    let after = nothing_replaced_since(&emulator, before);
    assert!(
        !after
            .iter()
            .any(|a| a == "CreateBucket" || a == "DeleteBucket"),
        "the bucket is kept: {after:?}"
    );
}

#[tokio::test]
async fn adopt_of_a_server_made_by_hand_in_the_default_vpc_explains_why_not() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    // The console's way: the default VPC.
    let instance = ec2
        .run_instances()
        .image_id(PINNED_AMI)
        .instance_type(InstanceType::T3Medium)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    let p = Project::with_stack(&emulator.endpoint(), "hand", REGION);
    let out = p.run_ok(&["adopt", "--instance", &instance, "--auto-approve"], 1);
    assert!(
        out.stderr.contains("the region's default VPC")
            && out
                .stderr
                .contains("can't move to another VPC without being replaced"),
        "{out:?}"
    );
    assert!(ours(&emulator, "hand").await.is_empty());
}

#[tokio::test]
async fn adopt_of_a_server_and_database_named_by_hand() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let b = boilerplate(&emulator, "named").await;
    let p = Project::with_stack(&emulator.endpoint(), "named", REGION);
    let before = emulator.actions().len();
    let out = p.run_ok(
        &[
            "adopt",
            "--instance",
            &b.instance,
            "--database",
            &b.database,
            "--auto-approve",
        ],
        0,
    );
    assert!(out.stdout.contains("(was Name=named-ec2_sg)"), "{out:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    nothing_replaced_since(&emulator, before);
    // A name that isn't there is said, before anything is tagged.
    let q = Project::with_stack(&emulator.endpoint(), "other", REGION);
    let out = q.run_ok(&["adopt", "--database", "no-such-db", "--auto-approve"], 1);
    assert!(
        out.stderr.contains("there is no database no-such-db"),
        "{out:?}"
    );
}

#[tokio::test]
async fn adopt_never_takes_over_another_stacks_resources() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let b = boilerplate(&emulator, "mine").await;
    let ec2 = emulator.ec2(REGION).await;
    ec2.create_tags()
        .resources(&b.rds_sg)
        .tags(
            Tag::builder()
                .key("ihp-infra:stack")
                .value("theirs")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let p = Project::with_stack(&emulator.endpoint(), "mine", REGION);
    p.write("terraform.tfstate", &state_file(&b, PASSWORD));
    let stack_before = std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap();
    let before = emulator.actions().len();
    let out = adopt_state(&p, 1);
    assert!(
        out.stderr.contains(&format!(
            "security_group.db {} belongs to stack theirs",
            b.rds_sg
        )),
        "{out:?}"
    );
    let after = actions_after(&emulator, before);
    assert!(
        !after
            .iter()
            .any(|a| a == "CreateTags" || a == "AddTagsToResource"),
        "nothing tagged: {after:?}"
    );
    assert!(ours(&emulator, "mine").await.is_empty());
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap(),
        stack_before,
        "the stack file is untouched"
    );
}

#[tokio::test]
async fn adopt_killed_while_tagging_is_finished_by_the_next_run() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let b = boilerplate(&emulator, "kill").await;
    let p = Project::with_stack(&emulator.endpoint(), "kill", REGION);
    let before = emulator.actions().len();
    p.write("terraform.tfstate", &state_file(&b, PASSWORD));
    let pid = Arc::new(AtomicU32::new(0));
    let kill = pid.clone();
    // kill -9 when the first tag is on: some resources are the stack's,
    // the others not yet.
    let proxy = Proxy::start(
        emulator.port,
        Options {
            hook: Some(Arc::new(move |r: &Request, s: Stage| {
                if s == Stage::Answered && r.operation == "CreateTags" {
                    let pid = kill.swap(0, Ordering::SeqCst);
                    if pid != 0 {
                        // SAFETY: a signal to the child under test.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            })),
            ..Options::default()
        },
    );
    let mut child = p
        .command(&[
            "adopt",
            "--from-terraform",
            "terraform.tfstate",
            "--auto-approve",
        ])
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    pid.store(child.id(), Ordering::SeqCst);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "killed while tagging");
    let half = ours(&emulator, "kill").await;
    assert!(!half.is_empty(), "some were tagged before the kill");
    assert!(
        !half.contains(&b.database),
        "the database was not tagged yet: {half:?}"
    );

    // The lock of the killed run is left behind: broken, as the README says.
    p.run_ok(&["unlock", "--force"], 0);
    let out = adopt_state(&p, 0);
    assert!(out.stderr.contains("Adopted"), "{out:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let tagged = ours(&emulator, "kill").await;
    for id in [&b.vpc, &b.instance, &b.database, &b.ec2_sg, &b.rds_sg] {
        assert!(tagged.contains(id), "{id}: {tagged:?}");
    }
    nothing_replaced_since(&emulator, before);
}

#[tokio::test]
async fn adopt_takes_over_what_the_boilerplates_terraform_made() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let Some((terraform, mirror)) = crate::common::terraform() else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::with_stack(&emulator.endpoint(), "boiler", REGION);
    let tf = p.dir.path().join("IaC");
    std::fs::create_dir(&tf).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/terraform/boilerplate/main.tf"
        ),
        tf.join("main.tf"),
    )
    .unwrap();
    std::fs::write(
        tf.join("offline.tfrc"),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bench/terraform/offline.tfrc"
        ))
        .unwrap()
        .replace("MIRROR", &mirror.display().to_string()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&terraform)
            .args(args)
            .current_dir(&tf)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", p.dir.path())
            .env("TF_CLI_CONFIG_FILE", tf.join("offline.tfrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_VAR_endpoint", emulator.endpoint())
            .env("TF_VAR_prefix", "boiler")
            .env("TF_VAR_region", REGION)
            .env("TF_VAR_az_1", format!("{REGION}a"))
            .env("TF_VAR_az_2", format!("{REGION}b"))
            .env("TF_VAR_key_name", crate::common::KEY_NAME)
            .env("TF_VAR_ami", PINNED_AMI)
            .env("TF_VAR_db_password", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "terraform {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init", "-no-color"]);
    run(&["apply", "-auto-approve", "-no-color"]);
    let before = emulator.actions().len();

    let out = p.run_ok(
        &[
            "adopt",
            "--from-terraform",
            "IaC/terraform.tfstate",
            "--auto-approve",
        ],
        0,
    );
    assert!(
        out.stdout
            .contains("matches the password in the Terraform state"),
        "{out:?}"
    );
    for address in [
        "aws_vpc.main",
        "aws_subnet.public",
        "aws_security_group.ec2_sg",
        "aws_security_group.rds_sg",
        "aws_instance.ihp_app",
        "aws_db_instance.postgres",
        "aws_db_subnet_group.main",
    ] {
        assert!(
            out.stdout.contains(&format!("(was {address})")),
            "{address}: {out:?}"
        );
    }
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    nothing_replaced_since(&emulator, before);
}
