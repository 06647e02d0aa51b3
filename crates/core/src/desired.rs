//! What a stack wants to exist: a list of resources with dependencies.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Address, Attr, Desired, Item, Kind, Mutability, Peer, Ref, Rule, Value};
use crate::stack::{STACK_TAG, Stack};

pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const ANYWHERE: &str = "0.0.0.0/0";

pub fn vpc() -> Address {
    Address::new(Kind::Vpc, "vpc")
}
pub fn internet_gateway() -> Address {
    Address::new(Kind::InternetGateway, "igw")
}
pub fn public_subnet() -> Address {
    Address::new(Kind::Subnet, "public")
}
pub fn private_subnet(n: u8) -> Address {
    Address::new(Kind::Subnet, &format!("private-{n}"))
}
pub fn public_route_table() -> Address {
    Address::new(Kind::RouteTable, "public-rt")
}
pub fn app_security_group() -> Address {
    Address::new(Kind::SecurityGroup, "app")
}
pub fn db_security_group() -> Address {
    Address::new(Kind::SecurityGroup, "db")
}
pub fn instance() -> Address {
    Address::new(Kind::Instance, "app")
}
pub fn db_subnet_group() -> Address {
    Address::new(Kind::DbSubnetGroup, "db-subnets")
}
pub fn database() -> Address {
    Address::new(Kind::Database, "postgres-db")
}
pub fn bucket() -> Address {
    Address::new(Kind::Bucket, "storage")
}
/// The bucket the server's database dumps are copied to.
pub fn backups_bucket() -> Address {
    Address::new(Kind::Bucket, "backups")
}
/// Whether a bucket is the stack's backups bucket: at its address, or (a
/// renamed one, found by its tag) by its Name tag.
pub fn is_backups_bucket(address: &Address, name_tag: Option<&str>, prefix: &str) -> bool {
    address.kind == Kind::Bucket
        && (*address == backups_bucket() || name_tag == Some(format!("{prefix}-backups").as_str()))
}
pub fn backups_policy() -> Address {
    Address::new(Kind::IamPolicy, "backups-write")
}
pub fn log_group() -> Address {
    Address::new(Kind::LogGroup, "logs")
}
pub fn s3_policy() -> Address {
    Address::new(Kind::IamPolicy, "s3-access")
}
pub fn logs_policy() -> Address {
    Address::new(Kind::IamPolicy, "cloudwatch-logs")
}
pub fn role() -> Address {
    Address::new(Kind::IamRole, "app-role")
}
pub fn instance_profile() -> Address {
    Address::new(Kind::InstanceProfile, "app-profile")
}
pub fn s3_user() -> Address {
    Address::new(Kind::IamUser, "s3-user")
}
pub fn access_key() -> Address {
    Address::new(Kind::AccessKey, crate::handover::S3_KEY)
}
/// The user the app sends mail as (SES SMTP), its key and its policy.
pub fn smtp_user() -> Address {
    Address::new(Kind::IamUser, "smtp-user")
}
pub fn smtp_key() -> Address {
    Address::new(Kind::AccessKey, crate::handover::SMTP_KEY)
}
pub fn ses_policy() -> Address {
    Address::new(Kind::IamPolicy, "ses-send")
}
pub fn elastic_ip() -> Address {
    Address::new(Kind::ElasticIp, "app-ip")
}
pub fn ssm_policy() -> Address {
    Address::new(Kind::IamPolicy, "ssm-read")
}
/// The SES domain identity the app's mail is sent as.
pub fn email_identity() -> Address {
    Address::new(Kind::EmailIdentity, "mail")
}
/// The A record of one of the stack's host names (its role is the name).
pub fn dns_record(name: &str) -> Address {
    Address::new(Kind::DnsRecord, name)
}
pub fn parameter(p: crate::handover::Parameter) -> Address {
    Address::new(Kind::Parameter, p.role)
}

/// How many CNAME records Easy DKIM asks for.
pub const DKIM_RECORDS: usize = 3;

/// The CNAME record of Easy DKIM token `n` (1 to 3).
pub fn dkim_record(n: usize) -> Address {
    Address::new(Kind::DnsRecord, &format!("dkim-{n}"))
}

/// Seconds resolvers keep the domain's records: short enough that a new
/// address is seen within minutes.
pub const DNS_TTL: i64 = 300;

/// The TCP ports the server may always reach anywhere: ssh, http and
/// https (deploys, updates, AWS's APIs), Postgres, and mail submission
/// (587 with STARTTLS, 465 with TLS: SES and other SMTP relays).
pub const APP_EGRESS_PORTS: [i32; 6] = [22, 80, 443, 5432, 587, 465];

/// What planning learns from AWS before it can say what the stack wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The image a new server would start from, when one was found.
    pub image: Option<Image>,
    /// What the stack's image choice means here, e.g. "nixos 26.05 x86_64".
    /// A change of it replaces the server; a newer image of it does not.
    pub image_choice: String,
    /// The salted hash of the password, as it should be tagged on the
    /// database: the live one when it matches, else a new one.
    pub password_hash: String,
    /// Partition, account and region, for the ARNs in policies.
    pub arns: crate::policies::Arns,
    /// The digest ([`crate::handover::digest`]) of each hand-over
    /// parameter's value, by role, where it can be known before apply;
    /// the others are written once what they hold exists.
    pub parameters: BTreeMap<&'static str, String>,
    /// Whether the secret of the live access key is known (in its
    /// parameter, or in the local key file): a key whose secret is lost
    /// is replaced, so that the server gets one it can use.
    pub key_secret_known: bool,
    /// The same for the SMTP user's key: its SMTP password is stored, for
    /// that key.
    pub smtp_secret_known: bool,
    /// The live SES identity's Easy DKIM tokens: what its CNAME records
    /// are named by (until it exists, they wait for it).
    pub dkim_tokens: Vec<String>,
}

impl Facts {
    /// What gives the graph's shape and names but not what a create would
    /// use: enough to observe, or to destroy.
    pub fn unknown(arns: crate::policies::Arns) -> Facts {
        Facts {
            image: None,
            image_choice: String::new(),
            password_hash: String::new(),
            arns,
            parameters: BTreeMap::new(),
            key_secret_known: true,
            smtp_secret_known: true,
            dkim_tokens: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
}

fn pending(addr: Address) -> Value {
    Value::Ref(Ref::Pending(addr))
}
fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
fn replace(name: &'static str, value: Value) -> Attr {
    Attr {
        name,
        value,
        mutability: Mutability::ForcesReplacement,
    }
}
fn in_place(name: &'static str, value: Value) -> Attr {
    Attr {
        name,
        value,
        mutability: Mutability::InPlace,
    }
}
fn create_only(name: &'static str, value: Value) -> Attr {
    Attr {
        name,
        value,
        mutability: Mutability::CreateOnly,
    }
}
fn grow_only(name: &'static str, value: i64) -> Attr {
    Attr {
        name,
        value: Value::Int(value),
        mutability: Mutability::GrowOnly,
    }
}
fn rules(rules: impl IntoIterator<Item = Rule>) -> Value {
    Value::Set(rules.into_iter().map(Item::Rule).collect())
}

/// The tags a resource of `stack` with this role is created with.
pub fn tags(stack: &Stack, role: &str) -> BTreeMap<String, String> {
    let mut tags = stack.tags.clone();
    tags.insert(STACK_TAG.to_string(), stack.prefix.clone());
    tags.insert("Name".to_string(), stack.name(role));
    tags
}

/// The RDS identifier; RDS names are unique per account and region.
pub fn database_identifier(stack: &Stack) -> String {
    stack.name("postgres-db")
}

/// The DB subnet group's name: unique per account and region.
pub fn db_subnet_group_name(stack: &Stack) -> String {
    stack
        .database
        .as_ref()
        .and_then(|db| db.subnet_group.clone())
        .unwrap_or_else(|| stack.name("db-subnets"))
}

/// Every resource the stack wants, dependencies before dependents.
pub fn resources(stack: &Stack, facts: &Facts) -> Vec<Desired> {
    graph(stack, facts).wanted
}

/// The resources of a stack: those it wants, and those of the parts it
/// leaves out (found to be deleted, by the names they would have).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// Dependencies before dependents.
    pub wanted: Vec<Desired>,
    pub left_out: Vec<Desired>,
}

/// The stack's [`Graph`].
pub fn graph(stack: &Stack, facts: &Facts) -> Graph {
    let resource = |address: Address, attrs: Vec<Attr>, depends_on: Vec<Address>| Desired {
        tags: tags(stack, &address.role),
        address,
        attrs,
        depends_on,
    };
    let subnet = |address: Address, cidr: &str, az: &str, public: bool| {
        resource(
            address,
            vec![
                replace("vpc", pending(vpc())),
                replace("cidr_block", text(cidr)),
                replace("availability_zone", text(az)),
                in_place("map_public_ip_on_launch", Value::Bool(public)),
            ],
            vec![vpc()],
        )
    };
    let security_group = |address: Address, description: &str, ingress, egress, deps| {
        let group_name = stack.name(&address.role);
        resource(
            address,
            vec![
                replace("vpc", pending(vpc())),
                // Named once: a group adopted from Terraform keeps the
                // name it generated, and a newer description isn't worth
                // replacing a group the server and database use.
                create_only("group_name", Value::Text(group_name)),
                create_only("description", text(description)),
                in_place("ingress", ingress),
                in_place("egress", egress),
            ],
            deps,
        )
    };
    let anywhere = || Peer::Cidr(ANYWHERE.to_string());
    let web_ports = [22, 80, 443];
    // A disabled part is built from its defaults, then left out below.
    let server = stack.instance.clone().unwrap_or_default();
    let db = stack.database.clone().unwrap_or_default();

    let mut all = vec![
        resource(
            vpc(),
            vec![
                replace("cidr_block", text(VPC_CIDR)),
                in_place("enable_dns_support", Value::Bool(true)),
                in_place("enable_dns_hostnames", Value::Bool(true)),
            ],
            vec![],
        ),
        resource(
            internet_gateway(),
            vec![in_place("vpc", pending(vpc()))],
            vec![vpc()],
        ),
        subnet(public_subnet(), "10.0.1.0/24", &stack.az_1, true),
        subnet(private_subnet(1), "10.0.2.0/24", &stack.az_1, false),
        subnet(private_subnet(2), "10.0.3.0/24", &stack.az_2, false),
        resource(
            public_route_table(),
            vec![
                replace("vpc", pending(vpc())),
                in_place(
                    "routes",
                    Value::Set(BTreeSet::from([Item::Route {
                        destination: ANYWHERE.to_string(),
                        gateway: Ref::Pending(internet_gateway()),
                    }])),
                ),
                in_place(
                    "subnets",
                    Value::Set(BTreeSet::from([Item::Subnet(
                        Ref::Pending(public_subnet()),
                    )])),
                ),
            ],
            vec![vpc(), internet_gateway(), public_subnet()],
        ),
        security_group(
            app_security_group(),
            "ihp-infra: the app server (ssh, http, https in)",
            rules(web_ports.map(|p| Rule::tcp(p, anywhere()))),
            rules(
                APP_EGRESS_PORTS
                    .into_iter()
                    .chain(server.egress_ports.iter().copied())
                    .map(|p| Rule::tcp(p, anywhere())),
            ),
            vec![vpc()],
        ),
        security_group(
            db_security_group(),
            "ihp-infra: the database (postgres from the app server only)",
            rules([Rule::tcp(
                5432,
                Peer::Group(Ref::Pending(app_security_group())),
            )]),
            rules([Rule::all_traffic(anywhere())]),
            vec![vpc(), app_security_group()],
        ),
    ];
    // The server needs its instance profile: access comes first.
    all.extend(access(stack, facts, &resource));
    all.extend([
        resource(
            instance(),
            vec![
                replace("image", Value::Text(facts.image_choice.clone())),
                create_only(
                    "image_id",
                    facts
                        .image
                        .as_ref()
                        .map(|i| Value::Text(i.id.clone()))
                        .unwrap_or(Value::None),
                ),
                create_only(
                    "image_name",
                    facts
                        .image
                        .as_ref()
                        .map(|i| Value::Text(i.name.clone()))
                        .unwrap_or(Value::None),
                ),
                in_place("instance_type", text(&server.instance_type)),
                replace("key_name", text(&stack.key_name)),
                replace("subnet", pending(public_subnet())),
                in_place(
                    "security_groups",
                    Value::Set(BTreeSet::from([Item::Group(Ref::Pending(
                        app_security_group(),
                    ))])),
                ),
                in_place("instance_profile", pending(instance_profile())),
                grow_only("root_volume_size", server.volume_size_gb.into()),
                // gp3: cheaper than gp2 and faster below 1 TB; changed in place.
                in_place("root_volume_type", text("gp3")),
                replace(
                    "root_volume_encrypted",
                    Value::Bool(server.root_volume_encrypted),
                ),
                in_place("http_tokens", text("required")),
                // A run killed inside a type change (stop, modify, start)
                // can leave the server stopped: the next plan starts it.
                in_place("state", text("running")),
            ],
            vec![
                public_subnet(),
                app_security_group(),
                public_route_table(),
                instance_profile(),
            ],
        ),
        // A public address that outlives the server: moved to a replacement.
        resource(
            elastic_ip(),
            vec![
                replace("domain", text("vpc")),
                in_place("instance", pending(instance())),
            ],
            vec![instance(), internet_gateway()],
        ),
        resource(
            db_subnet_group(),
            vec![
                replace("name", Value::Text(db_subnet_group_name(stack))),
                // A subnet group can't move to another VPC: a new VPC means a new group.
                replace("vpc", pending(vpc())),
                in_place(
                    "subnets",
                    Value::Set(BTreeSet::from([
                        Item::Subnet(Ref::Pending(private_subnet(1))),
                        Item::Subnet(Ref::Pending(private_subnet(2))),
                    ])),
                ),
            ],
            vec![vpc(), private_subnet(1), private_subnet(2)],
        ),
        resource(
            database(),
            vec![
                replace("identifier", Value::Text(database_identifier(stack))),
                replace("engine", text("postgres")),
                in_place(
                    "engine_version",
                    Value::AtLeastVersion(db.engine_version.clone()),
                ),
                in_place("instance_class", text(&db.instance_class)),
                grow_only("allocated_storage", db.allocated_storage_gb.into()),
                replace("username", text(&db.username)),
                replace("subnet_group", pending(db_subnet_group())),
                in_place(
                    "security_groups",
                    Value::Set(BTreeSet::from([Item::Group(Ref::Pending(
                        db_security_group(),
                    ))])),
                ),
                in_place("publicly_accessible", Value::Bool(false)),
                in_place(
                    "backup_retention_days",
                    Value::Int(db.backup_retention_days.into()),
                ),
                replace("storage_encrypted", Value::Bool(db.storage_encrypted)),
                in_place("deletion_protection", Value::Bool(db.deletion_protection)),
                in_place("multi_az", Value::Bool(db.multi_az)),
                in_place("password", Value::Sensitive(facts.password_hash.clone())),
            ],
            vec![db_subnet_group(), db_security_group()],
        ),
    ]);
    // The secrets the server fetches at boot: written once what they hold
    // exists (the database, the access key).
    for (p, dependency) in [
        (crate::handover::DATABASE_URL, database()),
        (crate::handover::KEY_ID, access_key()),
        (crate::handover::SECRET_KEY, access_key()),
        (crate::handover::SMTP_USER, smtp_key()),
        (crate::handover::SMTP_PASSWORD, smtp_key()),
    ] {
        all.push(resource(
            parameter(p),
            vec![
                replace("name", Value::Text(crate::handover::name(&stack.prefix, p))),
                in_place("type", text("SecureString")),
                in_place(
                    "value",
                    Value::Sensitive(facts.parameters.get(p.role).cloned().unwrap_or_default()),
                ),
            ],
            vec![dependency],
        ));
    }
    // The domain's A records, in the zone the stack names. Record sets
    // carry no tags: each is the stack's only while its ownership record
    // (see `route53`) stands beside it, and no other is ever touched.
    if let Some(domain) = &stack.domain
        && let Some(zone) = &domain.zone
    {
        // The Elastic IP itself: its live record holds its address, and a
        // replaced address moves the records with it.
        let address = pending(elastic_ip());
        for name in domain.names() {
            all.push(resource(
                dns_record(name),
                vec![
                    replace("zone", text(zone)),
                    replace("name", text(name)),
                    replace("type", text("A")),
                    in_place("ttl", Value::Int(DNS_TTL)),
                    in_place("address", address.clone()),
                ],
                vec![elastic_ip()],
            ));
        }
    }
    // Mail: the SES identity of the domain the app sends from, and its
    // DKIM records when the stack's zone holds that domain.
    if let Some(mail) = &stack.mail {
        all.push(resource(
            email_identity(),
            vec![replace("name", text(&mail.from_domain))],
            vec![],
        ));
        let zone = stack
            .domain
            .as_ref()
            .and_then(|d| d.zone.as_ref())
            .filter(|z| crate::stack::in_zone(&mail.from_domain, z));
        if let Some(zone) = zone {
            let tokens = (facts.dkim_tokens.len() == DKIM_RECORDS).then_some(&facts.dkim_tokens);
            for n in 1..=DKIM_RECORDS {
                let (name, target) = match tokens {
                    Some(t) => (
                        text(&format!("{}._domainkey.{}", t[n - 1], mail.from_domain)),
                        text(&format!("{}.dkim.amazonses.com", t[n - 1])),
                    ),
                    None => (pending(email_identity()), pending(email_identity())),
                };
                all.push(resource(
                    dkim_record(n),
                    vec![
                        replace("zone", text(zone)),
                        replace("name", name),
                        replace("type", text("CNAME")),
                        in_place("ttl", Value::Int(DNS_TTL)),
                        in_place("address", target),
                        create_only("dkim_token", Value::Int(n as i64)),
                    ],
                    vec![email_identity()],
                ));
            }
        }
    }
    // Nothing else depends on these: they can be left out whole. (The
    // private subnets stay: free, and ready for a database.)
    let mut left_out = Vec::new();
    if stack.instance.is_none() {
        left_out.extend([instance(), elastic_ip()]);
    }
    if stack.database.is_none() {
        left_out.extend([database(), db_subnet_group(), db_security_group()]);
    }
    if !stack.storage.access_key {
        left_out.extend([
            s3_user(),
            access_key(),
            parameter(crate::handover::KEY_ID),
            parameter(crate::handover::SECRET_KEY),
        ]);
    }
    if stack.database.is_none() {
        left_out.push(parameter(crate::handover::DATABASE_URL));
    }
    if stack.backups.is_none() {
        left_out.extend([backups_bucket(), backups_policy()]);
    }
    if stack.mail.as_ref().is_some_and(|m| !m.enabled) {
        left_out.push(email_identity());
        left_out.extend((1..=DKIM_RECORDS).map(dkim_record));
    }
    if !stack.mail.as_ref().is_some_and(|m| m.enabled) {
        left_out.extend([
            smtp_user(),
            smtp_key(),
            ses_policy(),
            parameter(crate::handover::SMTP_USER),
            parameter(crate::handover::SMTP_PASSWORD),
        ]);
    }
    let (left_out, wanted) = all.into_iter().partition(|d| left_out.contains(&d.address));
    Graph { wanted, left_out }
}

/// S3, CloudWatch Logs and the IAM that lets the server (and optionally a
/// static key) use them.
fn access(
    stack: &Stack,
    facts: &Facts,
    resource: &dyn Fn(Address, Vec<Attr>, Vec<Address>) -> Desired,
) -> Vec<Desired> {
    let arns = &facts.arns;
    let bucket_name = &stack.storage.bucket;
    let policies = |addresses: &[Address]| {
        Value::Set(
            addresses
                .iter()
                .map(|a| Item::Policy(Ref::Pending(a.clone())))
                .collect(),
        )
    };
    let mut role_policies = vec![s3_policy(), logs_policy(), ssm_policy()];
    if stack.backups.is_some() {
        role_policies.push(backups_policy());
    }
    let mut all = Vec::new();
    // Left out unless the stack has `backups` (see `graph`).
    {
        let backups = stack
            .backups
            .clone()
            .unwrap_or_else(|| crate::stack::BackupsSpec {
                bucket: stack.name("backups"),
                retention_days: 30,
            });
        all.extend([
            resource(
                backups_bucket(),
                vec![
                    replace("name", text(&backups.bucket)),
                    in_place("encryption", text("AES256")),
                    in_place("block_public_access", Value::Bool(true)),
                    in_place("public_read_policy", Value::None),
                    // Each day's dump replaces the last as a new version;
                    // replaced ones expire, the newest never does.
                    in_place("versioning", text("Enabled")),
                    in_place(
                        "noncurrent_expiry_days",
                        Value::Int(backups.retention_days.into()),
                    ),
                ],
                vec![],
            ),
            resource(
                backups_policy(),
                vec![
                    replace("name", Value::Text(stack.name("backups-write"))),
                    in_place(
                        "document",
                        Value::Json(crate::policies::backups_write(arns, &backups.bucket)),
                    ),
                ],
                vec![],
            ),
        ]);
    }
    all.extend([
        resource(
            bucket(),
            vec![
                replace("name", text(bucket_name)),
                in_place("encryption", text("AES256")),
                in_place(
                    "block_public_access",
                    Value::Bool(!stack.storage.public_read),
                ),
                in_place(
                    "public_read_policy",
                    if stack.storage.public_read {
                        Value::Json(crate::policies::s3_public_read(arns, bucket_name))
                    } else {
                        Value::None
                    },
                ),
            ],
            vec![],
        ),
        resource(
            log_group(),
            vec![
                replace("name", text(&stack.logs.group)),
                in_place(
                    "retention_days",
                    Value::Int(stack.logs.retention_days.into()),
                ),
            ],
            vec![],
        ),
        resource(
            s3_policy(),
            vec![
                replace("name", Value::Text(stack.name("s3-access"))),
                in_place(
                    "document",
                    Value::Json(crate::policies::s3_access(arns, bucket_name)),
                ),
            ],
            vec![],
        ),
        resource(
            logs_policy(),
            vec![
                replace("name", Value::Text(stack.name("cloudwatch-logs"))),
                in_place(
                    "document",
                    Value::Json(crate::policies::cloudwatch_logs(arns, &stack.logs.group)),
                ),
            ],
            vec![],
        ),
        resource(
            ssm_policy(),
            vec![
                replace("name", Value::Text(stack.name("ssm-read"))),
                in_place(
                    "document",
                    Value::Json(crate::policies::ssm_read(arns, &stack.prefix)),
                ),
            ],
            vec![],
        ),
        resource(
            role(),
            vec![
                replace("name", Value::Text(stack.name("app-role"))),
                in_place(
                    "assume_role_policy",
                    Value::Json(crate::policies::ec2_assume_role()),
                ),
                in_place("policies", policies(&role_policies)),
            ],
            role_policies.clone(),
        ),
        resource(
            instance_profile(),
            vec![
                replace("name", Value::Text(stack.name("app-profile"))),
                in_place(
                    "roles",
                    Value::Set(BTreeSet::from([Item::Role(Ref::Pending(role()))])),
                ),
            ],
            vec![role()],
        ),
    ]);
    // Mail: a user allowed only to send as the mail domain, whose key the
    // SMTP credentials come from. Left out without mail (see `graph`).
    let from_domain = stack
        .mail
        .as_ref()
        .map(|m| m.from_domain.clone())
        .unwrap_or_else(|| "example.com".into());
    all.push(resource(
        ses_policy(),
        vec![
            replace("name", Value::Text(stack.name("ses-send"))),
            in_place(
                "document",
                Value::Json(crate::policies::ses_send(arns, &from_domain)),
            ),
        ],
        vec![],
    ));
    all.push(resource(
        smtp_user(),
        vec![
            replace("name", Value::Text(stack.name("smtp-user"))),
            in_place("policies", policies(&[ses_policy()])),
        ],
        vec![ses_policy()],
    ));
    all.push(resource(
        smtp_key(),
        vec![
            replace("user", pending(smtp_user())),
            replace("secret_known", Value::Bool(true)),
        ],
        vec![smtp_user()],
    ));
    // Left out unless storage.access_key (see `graph`).
    all.push(resource(
        s3_user(),
        vec![
            replace("name", Value::Text(stack.name("s3-user"))),
            in_place("policies", policies(&[s3_policy()])),
        ],
        vec![s3_policy()],
    ));
    all.push(resource(
        access_key(),
        vec![
            replace("user", pending(s3_user())),
            // A key whose secret is lost is of no use to the server.
            // (The live key says whether it is: `Facts::key_secret_known`.)
            replace("secret_known", Value::Bool(true)),
        ],
        vec![s3_user()],
    ));
    all
}

/// Facts for unit tests: an image found, a fixed password hash.
/// For tests, here and in the binary crate (feature "testing").
#[cfg(any(test, feature = "testing"))]
pub fn test_facts() -> Facts {
    Facts {
        image: Some(Image {
            id: "ami-0a11c0ffee2605102".into(),
            name: "nixos/26.05.20261101.9f8e7d6-x86_64-linux".into(),
        }),
        image_choice: "nixos newest x86_64".into(),
        password_hash: "argon2id:test".into(),
        arns: crate::policies::Arns {
            partition: "aws".into(),
            account: "123456789012".into(),
            region: "eu-central-1".into(),
        },
        parameters: BTreeMap::new(),
        key_secret_known: true,
        smtp_secret_known: true,
        dkim_tokens: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn stack(prefix: &str) -> Stack {
        let mut s = crate::stack::test_stack(prefix);
        s.tags = BTreeMap::from([("team".to_string(), "web".to_string())]);
        s
    }

    #[test]
    fn every_resource_tagged_with_stack_and_name() {
        for r in resources(&stack("demo"), &test_facts()) {
            assert_eq!(r.tags[STACK_TAG], "demo", "{}", r.address);
            assert_eq!(r.tags["Name"], format!("demo-{}", r.address.role));
            assert_eq!(r.tags["team"], "web");
        }
    }

    #[test]
    fn server_and_database_left_out_take_only_their_own_resources() {
        let all = |s: &Stack| -> Vec<Address> {
            resources(s, &test_facts())
                .into_iter()
                .map(|d| d.address)
                .collect()
        };
        let full = all(&stack("demo"));
        let mut no_db = stack("demo");
        no_db.database = None;
        let mut no_server = stack("demo");
        no_server.instance = None;
        let left_out = |part: &[Address]| -> Vec<Address> {
            full.iter().filter(|a| !part.contains(a)).cloned().collect()
        };
        assert_eq!(
            left_out(&all(&no_db)),
            [
                db_security_group(),
                db_subnet_group(),
                database(),
                parameter(crate::handover::DATABASE_URL)
            ]
        );
        assert_eq!(left_out(&all(&no_server)), [instance(), elastic_ip()]);
        // What stays still finds everything it depends on.
        for s in [no_db, no_server] {
            let kept = resources(&s, &test_facts());
            for r in &kept {
                for dep in &r.depends_on {
                    assert!(
                        kept.iter().any(|d| &d.address == dep),
                        "{} needs {dep}",
                        r.address
                    );
                }
            }
        }
    }

    #[test]
    fn dependencies_come_first_and_exist() {
        let all = resources(&stack("demo"), &test_facts());
        for (i, r) in all.iter().enumerate() {
            for dep in &r.depends_on {
                let pos = all.iter().position(|d| &d.address == dep);
                assert!(pos.is_some_and(|p| p < i), "{} needs {dep}", r.address);
            }
        }
    }

    #[test]
    fn app_egress_is_exactly_the_listed_tcp_ports() {
        let all = resources(&stack("demo"), &test_facts());
        let app = all
            .iter()
            .find(|r| r.address == app_security_group())
            .unwrap();
        let egress = app.attrs.iter().find(|a| a.name == "egress").unwrap();
        let Value::Set(items) = &egress.value else {
            panic!("egress is a set")
        };
        let ports: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            ports,
            [
                "tcp/22 0.0.0.0/0",
                "tcp/80 0.0.0.0/0",
                "tcp/443 0.0.0.0/0",
                "tcp/465 0.0.0.0/0",
                "tcp/587 0.0.0.0/0",
                "tcp/5432 0.0.0.0/0"
            ]
        );
    }
}
