//! The stack file: parsed with locations, validated before any AWS call.
//!
//! Parsing keeps every value's line and column (`Spanned`), so each problem
//! names file, line, column and field. All problems are collected and reported
//! together, so a user fixes a file in one pass.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::regions;

/// The tag every resource of a stack carries; the stack is found again by it.
pub const STACK_TAG: &str = "ihp-infra:stack";

/// The most tags ihp-infra itself sets on one resource: `Name`, the stack
/// tag, and one of its kind's (the server's image choice, the database's
/// password hash).
pub const OWN_TAGS: usize = 3;

/// AWS's limit of tags on one resource (every service ihp-infra uses).
/// https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html
pub const MAX_TAGS: usize = 50;

/// Longest prefix we accept. The longest name derived from it is the RDS
/// identifier `<prefix>-postgres-db` (63 characters at most); 32 leaves room
/// for the S3 and IAM names later issues derive as well.
pub const PREFIX_MAX_LEN: usize = 32;

/// A validated stack: everything later stages may rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub path: PathBuf,
    pub prefix: String,
    pub region: String,
    pub az_1: String,
    pub az_2: String,
    pub key_name: String,
    /// Empty when the stack has no database (or the run doesn't need it).
    pub db_password: Secret,
    /// Extra tags for every resource, beside the stack and Name tags.
    pub tags: BTreeMap<String, String>,
    /// None: `instance: { enabled: false }`, no server.
    pub instance: Option<InstanceSpec>,
    /// None: `database: { enabled: false }`, no RDS (Postgres on the
    /// server, or elsewhere).
    pub database: Option<DatabaseSpec>,
    pub storage: StorageSpec,
    pub logs: LogsSpec,
    /// Where apply writes the NixOS module (`nixos_module:`), when the
    /// stack says; else [`crate::nixos::default_path`] decides.
    pub nixos_module: Option<PathBuf>,
    /// The ssh alias `ihp-infra ssh-config` writes (deploy-to-nixos
    /// connects to `production`).
    pub ssh_host: String,
    /// The key pair's private key, for the entry's IdentityFile.
    pub ssh_key_file: Option<String>,
    /// The app's public name and its certificate (`domain:`).
    pub domain: Option<DomainSpec>,
    /// Daily dumps of the server's Postgres copied off the server, for a
    /// stack without RDS (`backups:`).
    pub backups: Option<BackupsSpec>,
    /// The app's mail through Amazon SES (`mail:`).
    pub mail: Option<MailSpec>,
}

/// Where the app's mail comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSpec {
    /// The SES domain identity (Easy DKIM): the app sends as any address
    /// at this domain.
    pub from_domain: String,
    /// `mail: { enabled: false }`: the identity is deleted (the section
    /// stays, so it can be found by its name).
    pub enabled: bool,
}

/// Where the server's database dumps go, and for how long old ones stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupsSpec {
    /// Versioned, so each day's dump is kept as a version of the last.
    pub bucket: String,
    /// Days a replaced dump is kept; the newest is never expired.
    pub retention_days: i32,
}

/// The names the app answers to over HTTPS, and where their DNS records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// `services.ihp.domain`, and the certificate's first name.
    pub name: String,
    /// More names on the same certificate and virtual host (`www.`...).
    pub aliases: Vec<String>,
    /// Let's Encrypt's contact (`security.acme.defaults.email`).
    pub acme_email: String,
    /// A Route53 hosted zone of the account that holds the names: ihp-infra
    /// writes their A records there. None: the user creates them at the
    /// registrar (plan and output say which).
    pub zone: Option<String>,
}

impl DomainSpec {
    /// The domain, then its aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// The S3 bucket for the app's files, and who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSpec {
    /// S3 names are global: the default `<prefix>-storage` may be taken.
    pub bucket: String,
    /// Allow anyone to read objects (a bucket policy for s3:GetObject).
    pub public_read: bool,
    /// Make an IAM user with an access key for IHP's static-key S3 config
    /// (default: IHP's S3 storage reads only static keys). Its secret goes
    /// to the stack's SSM parameters.
    pub access_key: bool,
    /// Also write the key to `s3_access_key.env` next to the stack file.
    pub key_file: bool,
}

/// The CloudWatch log group the server ships its journal to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsSpec {
    pub group: String,
    pub retention_days: i32,
}

/// The retention periods CloudWatch Logs accepts.
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The app server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub instance_type: String,
    pub volume_size_gb: i32,
    pub image: ImageChoice,
    /// TCP ports the server may reach beside [`crate::desired::APP_EGRESS_PORTS`].
    pub egress_ports: Vec<i32>,
    /// False only for a server adopted with an unencrypted disk: EC2
    /// can't encrypt a volume in place.
    pub root_volume_encrypted: bool,
}

impl Default for InstanceSpec {
    fn default() -> Self {
        InstanceSpec {
            instance_type: "t3.medium".into(),
            // IHP's guide: at least 60 GiB, NixOS generations fill disks.
            volume_size_gb: 60,
            image: ImageChoice::Nixos {
                release: None,
                architecture: None,
            },
            egress_ports: Vec::new(),
            root_volume_encrypted: true,
        }
    }
}

/// Which image the server starts from. It only matters when the server is
/// created: a newer image of the same choice never replaces a running one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChoice {
    /// The newest official NixOS image of a release (any when `None`) and
    /// architecture (the instance type's when `None`).
    Nixos {
        release: Option<String>,
        architecture: Option<String>,
    },
    /// A pinned AMI id.
    Ami(String),
}

/// The Postgres database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// Major ("16") or major.minor ("16.4").
    pub engine_version: String,
    pub instance_class: String,
    pub allocated_storage_gb: i32,
    pub username: String,
    /// Days of automatic backups (0 turns them off).
    pub backup_retention_days: i32,
    /// False only for an adopted database made without encryption: RDS
    /// can't encrypt one in place.
    pub storage_encrypted: bool,
    /// The DB subnet group's name when it isn't `<prefix>-db-subnets`: an
    /// adopted database can't move to another group in the same VPC.
    pub subnet_group: Option<String>,
    /// RDS refuses to delete the database while this is on; destroy lifts
    /// it, and only as part of a confirmed run.
    pub deletion_protection: bool,
    /// A standby in a second zone: fails over by itself, doubles the cost.
    pub multi_az: bool,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        DatabaseSpec {
            engine_version: "16".into(),
            instance_class: "db.t3.micro".into(),
            allocated_storage_gb: 20,
            username: "postgres_user".into(),
            // The console's default; the API's is one day.
            backup_retention_days: 7,
            storage_encrypted: true,
            subnet_group: None,
            deletion_protection: true,
            multi_az: false,
        }
    }
}

impl Stack {
    /// The parts the stack leaves out, for people: "without server and
    /// database", "without database", or None.
    pub fn left_out(&self) -> Option<&'static str> {
        match (self.instance.is_none(), self.database.is_none()) {
            (true, true) => Some("without server and database"),
            (true, false) => Some("without server"),
            (false, true) => Some("without database"),
            (false, false) => None,
        }
    }

    /// Whether the server's disk holds the database: a stack without RDS
    /// runs Postgres on the server (IHP's appWithPostgres), so that disk
    /// gets the final snapshot a database would.
    pub fn server_holds_database(&self) -> bool {
        self.database.is_none()
    }

    /// `Name` of the resource with this role: `<prefix>-<role>`.
    pub fn name(&self, role: &str) -> String {
        format!("{}-{}", self.prefix, role)
    }
}

/// A value that must never be printed or logged; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value, for the few places that must send or write it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One thing wrong with the stack file, where it is, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("failed to read stack file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "invalid stack file {} ({} problem{})",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str(&format!(
            "\n  {}:{}:{}: {}: {}",
            path.display(),
            p.line,
            p.column,
            p.field,
            p.message
        ));
    }
    out
}

/// Where the database password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PasswordSource {
    Literal(Secret),
    Env(String),
}

#[cfg(test)]
impl schemars::JsonSchema for PasswordSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PasswordSource".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                { "type": "string", "minLength": 8, "maxLength": 128 },
                {
                    "type": "object",
                    "properties": { "env": { "type": "string", "minLength": 1 } },
                    "required": ["env"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// The stack file's JSON Schema, for editors (`ihp-infra schema`): made from
/// the types the stack file is read into, and checked current by a test.
pub const SCHEMA: &str = include_str!("../stack.schema.json");

impl<'de> Deserialize<'de> for PasswordSource {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PasswordVisitor;
        const EXPECTED: &str = "a quoted string, or a mapping `{ env: VARIABLE_NAME }`";

        impl<'de> Visitor<'de> for PasswordVisitor {
            type Value = PasswordSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PasswordSource::Literal(Secret::new(v)))
            }
            // Numbers and booleans would be re-spelled by YAML (0123, 1e3, yes):
            // refuse them, and never echo the value.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "must be {EXPECTED}; put quotes around a numeric password"
                )))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "must be {EXPECTED}; put quotes around a numeric password"
                )))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "must be {EXPECTED}; put quotes around a numeric password"
                )))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "must be {EXPECTED}; put quotes around the password"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut env = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "env" {
                        return Err(de::Error::custom(format!(
                            "unknown key `{key}` in db_password; the only key allowed is `env`"
                        )));
                    }
                    env = Some(map.next_value::<String>()?);
                }
                env.map(PasswordSource::Env).ok_or_else(|| {
                    de::Error::custom("db_password mapping needs `env: VARIABLE_NAME`")
                })
            }
        }
        deserializer.deserialize_any(PasswordVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawStack {
    /// Names every resource (<prefix>-vpc, ...) and tags it ihp-infra:stack=<prefix>: lower-case letters, digits and single hyphens, starting with a letter, 1 to 32 characters.
    #[cfg_attr(test, schemars(with = "String"))]
    prefix: Spanned<String>,
    /// The AWS region, e.g. eu-central-1.
    #[cfg_attr(test, schemars(with = "String"))]
    region: Spanned<String>,
    /// Availability zone of the server, the public subnet and the first DB subnet, e.g. eu-central-1a.
    #[cfg_attr(test, schemars(with = "String"))]
    az_1: Spanned<String>,
    /// Availability zone of the second DB subnet; must differ from az_1.
    #[cfg_attr(test, schemars(with = "String"))]
    az_2: Spanned<String>,
    /// An existing EC2 key pair in the region, for ssh.
    #[cfg_attr(test, schemars(with = "String"))]
    key_name: Spanned<String>,
    /// The database password: a quoted string, or { env: NAME } to read it from an environment variable (better: the file then holds no secret). 8 to 128 printable ASCII characters without space, /, " or @.
    #[cfg_attr(test, schemars(with = "Option<PasswordSource>"))]
    db_password: Option<Spanned<PasswordSource>>,
    #[serde(default)]
    /// Extra tags on every resource: up to 47; keys Name, aws:* and ihp-infra:* are reserved.
    #[cfg_attr(test, schemars(with = "BTreeMap<String, String>"))]
    tags: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    /// The app server (NixOS on EC2).
    instance: RawInstance,
    #[serde(default)]
    /// The Postgres database (RDS).
    database: RawDatabase,
    #[serde(default)]
    /// The S3 bucket for the app's files.
    storage: RawStorage,
    #[serde(default)]
    /// The CloudWatch log group the server ships its logs to.
    logs: RawLogs,
    /// Where apply writes the NixOS module (a .nix path relative to the stack file); default Config/nix/hosts/production/ihp-infra.nix in the project.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    nixos_module: Option<Spanned<String>>,
    /// The ssh alias `ihp-infra ssh-config` writes (default production).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    ssh_host: Option<Spanned<String>>,
    /// The key pair's private key, for the ssh entry's IdentityFile.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    ssh_key_file: Option<Spanned<String>>,
    /// The app's public name, e.g. app.example.com: nginx serves it over HTTPS with a Let's Encrypt certificate (needs acme_email and the server).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    domain: Option<Spanned<String>>,
    /// More names for the same app and certificate, e.g. [www.example.com] (at most 20).
    #[cfg_attr(test, schemars(with = "Option<Vec<String>>"))]
    domain_aliases: Option<Spanned<Vec<String>>>,
    /// Mail through Amazon SES: a domain identity with DKIM for from_domain (default: the domain).
    #[cfg_attr(test, schemars(with = "Option<RawMail>"))]
    mail: Option<RawMail>,
    #[serde(default)]
    /// Daily dumps of the server's Postgres, copied to an S3 bucket (a stack without RDS only; present means on).
    #[cfg_attr(test, schemars(with = "Option<RawBackups>"))]
    backups: Option<RawBackups>,
    /// Let's Encrypt's contact address for the certificate (required with domain).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    acme_email: Option<Spanned<String>>,
    /// A Route53 hosted zone in the account, e.g. example.com: ihp-infra writes the domain's A records there (never creates or deletes the zone). Without it, plan and output list the records to create at your registrar.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    dns_zone: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawStorage {
    /// The bucket's name (default <prefix>-storage); S3 names are global.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    bucket: Option<Spanned<String>>,
    /// Whether anyone may GET the bucket's objects (default false).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    public_read: Option<Spanned<bool>>,
    /// An IAM user with an access key for IHP's S3 storage (default true).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    access_key: Option<Spanned<bool>>,
    /// Also write the access key to s3_access_key.env, mode 0600 (default false).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    key_file: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawMail {
    /// The domain the app sends from, e.g. example.com (default: domain).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    from_domain: Option<Spanned<String>>,
    /// false turns mail off (default true once the section is there).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    enabled: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBackups {
    /// The bucket's name (default <prefix>-backups); S3 names are global.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    bucket: Option<Spanned<String>>,
    /// Days a dump replaced by a newer one is kept (default 30, 1 to 3650); the newest always stays.
    #[cfg_attr(test, schemars(with = "Option<i64>", range(min = 1, max = 3650)))]
    retention_days: Option<Spanned<i64>>,
    /// false turns backups off (default true once the section is there).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    enabled: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawLogs {
    /// The log group's name (default /ihp/<prefix>).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    group: Option<Spanned<String>>,
    /// Days CloudWatch keeps logs (default 30): one of CloudWatch's values (1, 3, 5, 7, 14, 30, 60, 90, ...).
    #[cfg_attr(test, schemars(with = "Option<i64>"))]
    retention_days: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawInstance {
    #[serde(rename = "type")]
    /// EC2 instance type (default t3.medium).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    instance_type: Option<Spanned<String>>,
    /// Root disk in GB, gp3, encrypted (default 60); grows in place, never shrinks.
    #[cfg_attr(test, schemars(with = "Option<i64>", range(min = 8, max = 16384)))]
    volume_size: Option<Spanned<i64>>,
    /// A quoted NixOS release such as "26.05" (default the newest).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    nixos_release: Option<Spanned<String>>,
    /// x86_64 or arm64 (default the instance type's).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    architecture: Option<Spanned<String>>,
    /// Pin an image id instead (excludes nixos_release and architecture).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    ami: Option<Spanned<String>>,
    /// TCP ports the server may reach besides 22, 80, 443, 5432, 587 and 465 (at most 40).
    #[cfg_attr(test, schemars(with = "Option<Vec<i64>>"))]
    egress_ports: Option<Spanned<Vec<i64>>>,
    /// false only for an adopted server whose disk is unencrypted (default true).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    root_volume_encrypted: Option<Spanned<bool>>,
    /// false leaves this part out of the stack (default true).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    enabled: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    /// Postgres major ("16") or major.minor ("16.4"), quoted; upgrades in place, never downgrades.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    engine_version: Option<Spanned<String>>,
    /// RDS instance class (default db.t3.micro).
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    instance_class: Option<Spanned<String>>,
    /// Storage in GB, 20 to 65536 (default 20); grows in place, never shrinks.
    #[cfg_attr(test, schemars(with = "Option<i64>", range(min = 20, max = 65536)))]
    allocated_storage: Option<Spanned<i64>>,
    /// The master user (default postgres_user): 1 to 16 letters, digits and underscores, starting with a letter.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    username: Option<Spanned<String>>,
    /// Days of automatic backups, 0 to 35 (default 7; 0 turns them off).
    #[cfg_attr(test, schemars(with = "Option<i64>", range(min = 0, max = 35)))]
    backup_retention_days: Option<Spanned<i64>>,
    /// false only for an adopted database made unencrypted (default true).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    storage_encrypted: Option<Spanned<bool>>,
    /// The DB subnet group's name (default <prefix>-db-subnets); an adopted database keeps its own.
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    subnet_group: Option<Spanned<String>>,
    /// RDS refuses to delete the database while on (default true); destroy lifts it as part of a confirmed run.
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    deletion_protection: Option<Spanned<bool>>,
    /// A standby in a second availability zone that takes over by itself (default false; doubles the database's cost).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    multi_az: Option<Spanned<bool>>,
    /// false leaves this part out of the stack (default true).
    #[cfg_attr(test, schemars(with = "Option<bool>"))]
    enabled: Option<Spanned<bool>>,
}

/// Reads and validates a stack file. Environment variables are read through
/// `env`, so tests need not touch the process environment.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Stack, StackError> {
    load_with(path, env, Password::Needed)
}

/// Whether the run needs the database password itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Password {
    Needed,
    /// Reading outputs: a `{ env: NAME }` password whose variable is unset
    /// is no problem (the stack's `db_password` is then empty and unused).
    Unused,
}

pub fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    password: Password,
) -> Result<Stack, StackError> {
    let bytes = std::fs::read(path).map_err(|source| StackError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |problem: Problem| StackError::Invalid {
        path: path.to_owned(),
        problems: vec![problem],
    };
    if bytes.len() > MAX_STACK_FILE {
        return Err(invalid(Problem {
            line: 1,
            column: 1,
            field: "(document)".into(),
            message: format!(
                "the file is {} bytes; a stack file is a few hundred bytes, at most {MAX_STACK_FILE} (is this the right file?)",
                bytes.len()
            ),
        }));
    }
    let text =
        String::from_utf8(bytes).map_err(|e| invalid(not_utf8(e.as_bytes(), e.utf8_error())))?;
    parse_with(path, &text, env, password).map_err(|problems| StackError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Stack files are tiny; anything bigger is the wrong file.
pub const MAX_STACK_FILE: usize = 1024 * 1024;

/// Where text stops being UTF-8, as a problem with its line and column.
fn not_utf8(bytes: &[u8], e: std::str::Utf8Error) -> Problem {
    let good = &bytes[..e.valid_up_to()];
    let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
    Problem {
        line,
        column,
        field: "(document)".into(),
        message: format!(
            "not UTF-8 text (byte 0x{:02X}); a stack file is YAML text: save it as UTF-8",
            bytes[e.valid_up_to()]
        ),
    }
}

/// Parses and validates stack-file text; `path` is only recorded.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Stack, Vec<Problem>> {
    parse_with(path, text, env, Password::Needed)
}

fn parse_with(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    need: Password,
) -> Result<Stack, Vec<Problem>> {
    let only_comments = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if only_comments {
        return Err(vec![Problem {
            line: 1,
            column: 1,
            field: "(document)".into(),
            message: "the stack file is empty; it needs prefix, region, az_1, az_2, key_name and db_password (see stacks/example.yaml)".into(),
        }]);
    }
    let raw: RawStack = serde_saphyr::from_str(text).map_err(|e| vec![yaml_problem(&e, text)])?;
    let mut problems = Vec::new();

    let prefix = &raw.prefix;
    if let Err(msg) = check_prefix(&prefix.value) {
        problems.push(problem(prefix, "prefix", msg));
    }

    let region = &raw.region;
    let region_known = regions::is_known(&region.value);
    if !region_known {
        problems.push(problem(
            region,
            "region",
            format!(
                "unknown region {:?}; allowed: {}",
                region.value,
                regions::KNOWN.join(", ")
            ),
        ));
    }
    for (field, az) in [("az_1", &raw.az_1), ("az_2", &raw.az_2)] {
        if region_known && !regions::az_in_region(&az.value, &region.value) {
            problems.push(problem(
                az,
                field,
                format!(
                    "{:?} is not an availability zone of region {}; use the region name and a zone letter, e.g. {}a",
                    az.value, region.value, region.value
                ),
            ));
        }
    }
    if raw.az_1.value == raw.az_2.value {
        problems.push(problem(
            &raw.az_2,
            "az_2",
            "must differ from az_1: RDS needs subnets in two availability zones".to_string(),
        ));
    }

    let key_name = &raw.key_name;
    if key_name.value.is_empty() || key_name.value.len() > 255 || !key_name.value.is_ascii() {
        problems.push(problem(
            key_name,
            "key_name",
            "must be the name of an EC2 key pair: 1 to 255 ASCII characters".to_string(),
        ));
    }

    let database_enabled = raw.database.enabled.as_ref().is_none_or(|e| e.value);
    let password = match &raw.db_password {
        // Without a database there is no password to need; one that is
        // given is still checked (it comes back when the database does).
        None if !database_enabled => Some(Secret::new(String::new())),
        None => {
            problems.push(Problem {
                line: 1,
                column: 1,
                field: "db_password".into(),
                message: "missing field `db_password`; it is required for the database (see stacks/example.yaml), or set `database: { enabled: false }`".into(),
            });
            None
        }
        Some(db_password) => match &db_password.value {
            PasswordSource::Literal(secret) => match check_password(secret.expose()) {
                Ok(()) => Some(secret.clone()),
                Err(msg) => {
                    problems.push(problem(db_password, "db_password", msg));
                    None
                }
            },
            PasswordSource::Env(var) => match env(var) {
                None if need == Password::Unused || !database_enabled => {
                    Some(Secret::new(String::new()))
                }
                None => {
                    problems.push(problem(
                        db_password,
                        "db_password",
                        format!("environment variable {var} is not set"),
                    ));
                    None
                }
                Some(value) => match check_password(&value) {
                    Ok(()) => Some(Secret::new(value)),
                    Err(msg) => {
                        problems.push(problem(
                            db_password,
                            "db_password",
                            format!("the value of environment variable {var} {msg}"),
                        ));
                        None
                    }
                },
            },
        },
    };
    let password = password.map(|p| {
        if database_enabled {
            p
        } else {
            Secret::new(String::new())
        }
    });

    let mut tags = BTreeMap::new();
    for (key, value) in &raw.tags {
        let field = format!("tags.{key}");
        if let Err(msg) = check_tag(key, &value.value) {
            problems.push(problem(value, &field, msg));
        }
        tags.insert(key.clone(), value.value.clone());
    }
    if tags.len() > MAX_TAGS - OWN_TAGS
        && let Some(last) = raw.tags.values().last()
    {
        problems.push(problem(
            last,
            "tags",
            format!(
                "{} tags given; at most {} are allowed: AWS allows {MAX_TAGS} per resource and \
                 ihp-infra sets up to {OWN_TAGS} itself (Name, {STACK_TAG} and one of the kind's)",
                tags.len(),
                MAX_TAGS - OWN_TAGS
            ),
        ));
    }

    // A disabled part's settings are still checked: they return with it.
    let instance = instance_spec(&raw.instance, &mut problems);
    let instance = raw
        .instance
        .enabled
        .as_ref()
        .is_none_or(|e| e.value)
        .then_some(instance);
    let database = database_spec(&raw.database, &mut problems);
    let database = database_enabled.then_some(database);
    let storage = StorageSpec {
        bucket: optional(&raw.storage.bucket, "storage.bucket", &mut problems, |b| {
            check_bucket_name(b).map(|()| b.clone())
        })
        .unwrap_or_else(|| format!("{}-storage", raw.prefix.value)),
        public_read: raw.storage.public_read.as_ref().is_some_and(|v| v.value),
        access_key: raw.storage.access_key.as_ref().is_none_or(|v| v.value),
        key_file: raw.storage.key_file.as_ref().is_some_and(|v| v.value),
    };
    if let Some(key_file) = &raw.storage.key_file
        && key_file.value
        && !storage.access_key
    {
        problems.push(problem(
            key_file,
            "storage.key_file",
            "a key file needs an access key; remove `key_file` or set `access_key: true`".into(),
        ));
    }
    let nixos_module = optional(&raw.nixos_module, "nixos_module", &mut problems, |m| {
        m.ends_with(".nix")
            .then(|| PathBuf::from(m))
            .ok_or_else(|| format!("{m:?} is not a .nix file path"))
    })
    .map(|m| match path.parent() {
        Some(dir) if m.is_relative() => dir.join(m),
        _ => m,
    });
    let ssh_host = optional(&raw.ssh_host, "ssh_host", &mut problems, |h| {
        let ok = !h.is_empty()
            && h.len() <= 64
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        ok.then(|| h.clone()).ok_or_else(|| {
            format!("{h:?} is not an ssh host alias: 1 to 64 letters, digits and - _ .")
        })
    })
    .unwrap_or_else(|| crate::outputs::SSH_HOST.to_string());
    let ssh_key_file = optional(&raw.ssh_key_file, "ssh_key_file", &mut problems, |f| {
        (!f.is_empty() && !f.contains(['\n', '\r', '"']))
            .then(|| f.clone())
            .ok_or_else(|| format!("{f:?} is not a file path (no quotes or line breaks)"))
    });
    let logs = LogsSpec {
        group: optional(&raw.logs.group, "logs.group", &mut problems, |g| {
            check_log_group(g).map(|()| g.clone())
        })
        .unwrap_or_else(|| format!("/ihp/{}", raw.prefix.value)),
        retention_days: optional(
            &raw.logs.retention_days,
            "logs.retention_days",
            &mut problems,
            |d| {
                i32::try_from(*d)
                    .ok()
                    .filter(|d| RETENTION_DAYS.contains(d))
                    .ok_or_else(|| {
                        let allowed: Vec<String> =
                            RETENTION_DAYS.iter().map(|d| d.to_string()).collect();
                        format!(
                            "{d} days is not a retention CloudWatch allows; allowed: {}",
                            allowed.join(", ")
                        )
                    })
            },
        )
        .unwrap_or(30),
    };

    let domain = domain_spec(&raw, instance.is_some(), &mut problems);
    let mail = mail_spec(&raw, domain.as_ref(), &mut problems);
    let backups = backups_spec(
        &raw,
        instance.is_some(),
        database.is_some(),
        &storage.bucket,
        &mut problems,
    );

    match password {
        Some(db_password) if problems.is_empty() => Ok(Stack {
            path: path.to_owned(),
            prefix: raw.prefix.value,
            region: raw.region.value,
            az_1: raw.az_1.value,
            az_2: raw.az_2.value,
            key_name: raw.key_name.value,
            db_password,
            tags,
            instance,
            database,
            storage,
            logs,
            nixos_module,
            ssh_host,
            ssh_key_file,
            domain,
            backups,
            mail,
        }),
        _ => {
            problems.sort_by_key(|p| (p.line, p.column));
            Err(problems)
        }
    }
}

/// Checks an optional value; records a problem and keeps the default when bad.
fn optional<T: Clone, U>(
    value: &Option<Spanned<T>>,
    field: &str,
    problems: &mut Vec<Problem>,
    check: impl Fn(&T) -> Result<U, String>,
) -> Option<U> {
    let v = value.as_ref()?;
    match check(&v.value) {
        Ok(u) => Some(u),
        Err(msg) => {
            problems.push(problem(v, field, msg));
            None
        }
    }
}

fn in_range(min: i64, max: i64, unit: &'static str) -> impl Fn(&i64) -> Result<i32, String> {
    move |v| {
        if (min..=max).contains(v) {
            Ok(*v as i32)
        } else {
            Err(format!("must be {min} to {max} {unit} (it is {v})"))
        }
    }
}

fn instance_spec(raw: &RawInstance, problems: &mut Vec<Problem>) -> InstanceSpec {
    let mut spec = InstanceSpec::default();
    if let Some(t) = optional(&raw.instance_type, "instance.type", problems, |t| {
        let ok = t.split_once('.').is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        });
        ok.then(|| t.clone()).ok_or_else(|| {
            format!("{t:?} is not an EC2 instance type; e.g. t3.medium, t4g.small, m7i.large")
        })
    }) {
        spec.instance_type = t;
    }
    if let Some(size) = optional(
        &raw.volume_size,
        "instance.volume_size",
        problems,
        in_range(8, 16384, "GB"),
    ) {
        spec.volume_size_gb = size;
    }
    if let Some(ports) = optional(
        &raw.egress_ports,
        "instance.egress_ports",
        problems,
        |ports| {
            let mut out = Vec::new();
            for p in ports {
                let port = in_range(1, 65535, "")(p)
                    .map_err(|_| format!("{p} is not a TCP port (1 to 65535)"))?;
                if !out.contains(&port) && !crate::desired::APP_EGRESS_PORTS.contains(&port) {
                    out.push(port);
                }
            }
            // One rule per port: AWS allows 60 per group and direction.
            if out.len() > 40 {
                return Err(format!(
                    "{} extra ports; at most 40 (a security group takes 60 rules each way)",
                    out.len()
                ));
            }
            Ok(out)
        },
    ) {
        spec.egress_ports = ports;
    }
    let release = optional(
        &raw.nixos_release,
        "instance.nixos_release",
        problems,
        |r| {
            let ok = r.len() == 5
                && r.as_bytes()[2] == b'.'
                && r.chars().filter(|c| c.is_ascii_digit()).count() == 4;
            ok.then(|| r.clone()).ok_or_else(|| {
                format!("{r:?} is not a NixOS release; releases look like \"26.05\" (quote it)")
            })
        },
    );
    let architecture = optional(
        &raw.architecture,
        "instance.architecture",
        problems,
        |a| match a.as_str() {
            "x86_64" | "arm64" => Ok(a.clone()),
            _ => Err(format!("{a:?} is not allowed; use x86_64 or arm64")),
        },
    );
    let ami = optional(&raw.ami, "instance.ami", problems, |a| {
        let hex = a.strip_prefix("ami-").unwrap_or("");
        (matches!(hex.len(), 8 | 17)
            && hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
        .then(|| a.clone())
        .ok_or_else(|| format!("{a:?} is not an AMI id (ami- and 8 or 17 hex digits)"))
    });
    if let Some(e) = &raw.root_volume_encrypted {
        spec.root_volume_encrypted = e.value;
    }
    spec.image = match ami {
        Some(ami) => {
            if let Some(other) = raw.nixos_release.as_ref().or(raw.architecture.as_ref()) {
                problems.push(problem(
                    other,
                    "instance",
                    "a pinned ami excludes nixos_release and architecture; remove one or the other"
                        .into(),
                ));
            }
            ImageChoice::Ami(ami)
        }
        None => ImageChoice::Nixos {
            release,
            architecture,
        },
    };
    spec
}

fn database_spec(raw: &RawDatabase, problems: &mut Vec<Problem>) -> DatabaseSpec {
    let mut spec = DatabaseSpec::default();
    if let Some(v) = optional(
        &raw.engine_version,
        "database.engine_version",
        problems,
        |v| {
            let parts: Vec<&str> = v.split('.').collect();
            let numeric = parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            (numeric && (1..=2).contains(&parts.len()))
            .then(|| v.clone())
            .ok_or_else(|| format!("{v:?} is not a Postgres version; use a major (\"16\") or major.minor (\"16.4\"), quoted"))
        },
    ) {
        spec.engine_version = v;
    }
    if let Some(c) = optional(
        &raw.instance_class,
        "database.instance_class",
        problems,
        |c| {
            (c.starts_with("db.") && c.matches('.').count() == 2)
                .then(|| c.clone())
                .ok_or_else(|| {
                    format!("{c:?} is not an RDS instance class; e.g. db.t3.micro, db.t4g.small")
                })
        },
    ) {
        spec.instance_class = c;
    }
    if let Some(gb) = optional(
        &raw.allocated_storage,
        "database.allocated_storage",
        problems,
        in_range(20, 65536, "GB"),
    ) {
        spec.allocated_storage_gb = gb;
    }
    if let Some(days) = optional(
        &raw.backup_retention_days,
        "database.backup_retention_days",
        problems,
        in_range(
            0,
            35,
            "days (RDS keeps automatic backups up to 35 days; 0 turns them off)",
        ),
    ) {
        spec.backup_retention_days = days;
    }
    if let Some(u) = optional(&raw.username, "database.username", problems, |u| {
        // CreateDBInstance's MasterUsername: "Must be 1 to 16 letters,
        // numbers, or underscores. First character must be a letter."
        // https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html
        let ok = (1..=16).contains(&u.len())
            && u.starts_with(|c: char| c.is_ascii_alphabetic())
            && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "{u:?} is not allowed; 1 to 16 letters, digits and underscores, starting with a letter"
            ));
        }
        if ["rdsadmin", "postgres", "admin", "public"].contains(&u.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{u:?} is reserved by RDS or Postgres; pick another name"
            ));
        }
        Ok(u.clone())
    }) {
        spec.username = u;
    }
    if let Some(e) = &raw.storage_encrypted {
        spec.storage_encrypted = e.value;
    }
    if let Some(p) = &raw.deletion_protection {
        spec.deletion_protection = p.value;
    }
    if let Some(m) = &raw.multi_az {
        spec.multi_az = m.value;
    }
    if let Some(g) = optional(&raw.subnet_group, "database.subnet_group", problems, |g| {
        // CreateDBSubnetGroup's DBSubnetGroupName: "no more than 255
        // letters, numbers, periods, underscores, spaces, or hyphens. Must
        // not be default." RDS keeps it in lower case: so must we, to
        // compare.
        let ok = (1..=255).contains(&g.len())
            && g.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | ' ' | '-')
            });
        if !ok {
            return Err(format!(
                "{g:?} is not allowed; 1 to 255 lower-case letters, digits, periods, underscores, spaces and hyphens"
            ));
        }
        if g == "default" {
            return Err("\"default\" is the VPC's default group, which RDS reserves".into());
        }
        Ok(g.clone())
    }) {
        spec.subnet_group = Some(g);
    }
    spec
}

fn mail_spec(
    raw: &RawStack,
    domain: Option<&DomainSpec>,
    problems: &mut Vec<Problem>,
) -> Option<MailSpec> {
    let section = raw.mail.as_ref()?;
    let from = optional(&section.from_domain, "mail.from_domain", problems, |d| {
        check_host_name(d).map(|()| d.clone())
    });
    let enabled = section.enabled.as_ref().is_none_or(|e| e.value);
    let from_domain = match (from, &section.from_domain, domain) {
        (Some(d), _, _) => d,
        // Its problem is recorded already.
        (None, Some(_), _) => return None,
        (None, None, Some(domain)) => domain.name.clone(),
        (None, None, None) => {
            let (line, column) = section
                .enabled
                .as_ref()
                .map(|e| (e.referenced.line(), e.referenced.column()))
                .unwrap_or((1, 1));
            problems.push(Problem {
                line,
                column,
                field: "mail.from_domain".into(),
                message: "mail needs the domain it sends from: set mail.from_domain, or domain"
                    .into(),
            });
            return None;
        }
    };
    Some(MailSpec {
        from_domain,
        enabled,
    })
}

fn backups_spec(
    raw: &RawStack,
    has_server: bool,
    has_database: bool,
    storage_bucket: &str,
    problems: &mut Vec<Problem>,
) -> Option<BackupsSpec> {
    let section = raw.backups.as_ref()?;
    let bucket = optional(&section.bucket, "backups.bucket", problems, |b| {
        check_bucket_name(b)?;
        if b == storage_bucket {
            return Err(format!(
                "{b:?} is the storage bucket; backups need a bucket of their own"
            ));
        }
        Ok(b.clone())
    })
    .unwrap_or_else(|| format!("{}-backups", raw.prefix.value));
    if bucket == storage_bucket
        && let Some(storage) = &raw.storage.bucket
        && section.enabled.as_ref().is_none_or(|e| e.value)
    {
        problems.push(problem(
            storage,
            "storage.bucket",
            format!("{bucket:?} is the backups bucket's name; give the storage bucket another, or set backups.bucket"),
        ));
    }
    let retention_days = optional(
        &section.retention_days,
        "backups.retention_days",
        problems,
        in_range(1, 3650, "days"),
    )
    .unwrap_or(30);
    if section.enabled.as_ref().is_some_and(|e| !e.value) {
        return None;
    }
    // Where the section starts: its first key.
    let at = [
        section
            .bucket
            .as_ref()
            .map(|v| (v.referenced.line(), v.referenced.column())),
        section
            .retention_days
            .as_ref()
            .map(|v| (v.referenced.line(), v.referenced.column())),
        section
            .enabled
            .as_ref()
            .map(|v| (v.referenced.line(), v.referenced.column())),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or((1, 1));
    let refuse = |message: &str| Problem {
        line: at.0,
        column: at.1,
        field: "backups".into(),
        message: message.into(),
    };
    if has_database {
        problems.push(refuse(
            "backups copy the dumps of Postgres on the server; with RDS, its automatic backups keep the database (database.backup_retention_days): remove backups, or set database: { enabled: false }",
        ));
    } else if !has_server {
        problems.push(refuse(
            "backups copy the dumps of Postgres on the server, and the stack has none: remove backups, or enable the instance",
        ));
    }
    Some(BackupsSpec {
        bucket,
        retention_days,
    })
}

/// Checks a host name as DNS (RFC 1035) and Let's Encrypt take it: lower
/// case, two labels or more, each 1 to 63 letters, digits and inner
/// hyphens, 253 characters in all.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
            // "ab--cd" is reserved for encodings (RFC 5891); only
            // punycode's xn-- is one. Let's Encrypt refuses the others.
            && (l.get(2..4) != Some("--") || l.starts_with("xn--"))
    };
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("{name:?}: write host names in lower case"));
    }
    let top_is_numeric = labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    if name.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) || top_is_numeric
    {
        return Err(format!(
            "{name:?} is not a host name: two or more labels of 1 to 63 lower-case letters, digits and inner hyphens, separated by dots (e.g. app.example.com), 253 characters at most"
        ));
    }
    Ok(())
}

/// Whether `name` is `zone` or a name inside it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// The longest name ihp-infra writes a record for: its ownership record's
/// name is 11 characters longer.
pub const MAX_NAME_IN_ZONE: usize = 242;

/// At most this many names besides the domain. Let's Encrypt allows 100
/// on a certificate; each is one record and one HTTP-01 challenge.
pub const MAX_DOMAIN_ALIASES: usize = 20;

fn domain_spec(
    raw: &RawStack,
    has_server: bool,
    problems: &mut Vec<Problem>,
) -> Option<DomainSpec> {
    let Some(domain) = &raw.domain else {
        for (value, field) in [(&raw.acme_email, "acme_email"), (&raw.dns_zone, "dns_zone")] {
            if let Some(v) = value {
                problems.push(problem(
                    v,
                    field,
                    format!("{field} needs domain: set domain, or remove {field}"),
                ));
            }
        }
        if let Some(v) = &raw.domain_aliases {
            problems.push(problem(
                v,
                "domain_aliases",
                "domain_aliases needs domain: set domain, or remove domain_aliases".into(),
            ));
        }
        return None;
    };
    let name = optional(&raw.domain, "domain", problems, |d| {
        check_host_name(d).map(|()| d.clone())
    });
    if !has_server {
        problems.push(problem(
            domain,
            "domain",
            "a domain needs the server (its records point at the server's address): remove domain, or enable the instance".into(),
        ));
    }
    let aliases = optional(&raw.domain_aliases, "domain_aliases", problems, |names| {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            check_host_name(n)?;
            if Some(n) == name.as_ref() || out.contains(n) {
                return Err(format!("{n:?} is named twice"));
            }
            out.push(n.clone());
        }
        if out.len() > MAX_DOMAIN_ALIASES {
            return Err(format!("{} names; at most {MAX_DOMAIN_ALIASES}", out.len()));
        }
        Ok(out)
    })
    .unwrap_or_default();
    let acme_email = match &raw.acme_email {
        None => {
            problems.push(problem(
                domain,
                "acme_email",
                "a domain needs acme_email: the address Let's Encrypt registers the certificate's account with".into(),
            ));
            None
        }
        Some(_) => optional(&raw.acme_email, "acme_email", problems, |e| {
            let Some((local, host)) = e.split_once('@') else {
                return Err(format!("{e:?} is not an email address (name@example.org)"));
            };
            let plain = !local.is_empty()
                && local.len() <= 64
                && !local.contains(|c: char| {
                    c.is_whitespace() || c.is_control() || "@\"<>()[],;:\\".contains(c)
                });
            if !plain || check_host_name(host).is_err() {
                return Err(format!("{e:?} is not an email address (name@example.org)"));
            }
            // Let's Encrypt refuses these contacts ("invalid contact domain").
            if ["example.com", "example.org", "example.net"]
                .iter()
                .any(|d| in_zone(host, d))
            {
                return Err(format!(
                    "{e:?}: Let's Encrypt refuses addresses at {host}; give one that receives mail"
                ));
            }
            Ok(e.clone())
        }),
    };
    let zone = optional(&raw.dns_zone, "dns_zone", problems, |z| {
        let z = z.strip_suffix('.').unwrap_or(z);
        check_host_name(z)?;
        // The ownership record beside each record is `_ihp-infra.<name>`.
        let long: Vec<&str> = name
            .iter()
            .chain(aliases.iter())
            .map(String::as_str)
            .filter(|n| n.len() > MAX_NAME_IN_ZONE)
            .collect();
        if !long.is_empty() {
            return Err(format!(
                "{} longer than {MAX_NAME_IN_ZONE} characters: with dns_zone, each name's ownership record (_ihp-infra.<name>) must stay within DNS's 253",
                long.join(", ")
            ));
        }
        let outside: Vec<&str> = name
            .iter()
            .chain(aliases.iter())
            .map(String::as_str)
            .filter(|n| !in_zone(n, z))
            .collect();
        if !outside.is_empty() {
            return Err(format!(
                "{} not in zone {z}: a zone holds records only for its own names",
                outside.join(", ")
            ));
        }
        Ok(z.to_string())
    });
    Some(DomainSpec {
        name: name?,
        aliases,
        acme_email: acme_email?,
        zone,
    })
}

fn problem<T>(spanned: &Spanned<T>, field: &str, message: String) -> Problem {
    Problem {
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
        field: field.to_string(),
        message,
    }
}

/// Turns a YAML or shape error into a problem. The source snippet the parser
/// can render is left out on purpose: it could show the password line.
fn yaml_problem(err: &serde_saphyr::Error, text: &str) -> Problem {
    let message = plain_message(err);
    // A missing key has no place of its own (the parser points at the end
    // of the mapping): name the top of the file.
    let (line, column) = match err.location() {
        _ if message.starts_with("missing field") => (1, 1),
        Some(l) => (l.line(), l.column()),
        None => (0, 0),
    };
    let at_top = line <= 1 && column <= 1 && message.starts_with("expected mapping");
    let field = backticked(&message)
        .filter(|_| message.contains("field"))
        .or_else(|| key_at_line(text, line).filter(|_| !at_top))
        .unwrap_or_else(|| "(document)".to_string());
    // `: x` or a `?` key with nothing in it (found by the fuzzer).
    let empty_key = text
        .lines()
        .nth(usize::try_from(line).unwrap_or(0).saturating_sub(1))
        .is_some_and(|l| l.trim_start().starts_with(':'));
    let field = if field.trim().is_empty() || empty_key {
        "(empty key)".to_string()
    } else {
        field
    };
    if at_top {
        return Problem {
            line,
            column,
            field,
            message:
                "a stack file is a mapping of keys to values (prefix: ..., region: ..., ...), \
                      not a list or a single value"
                    .into(),
        };
    }
    Problem {
        line,
        column,
        field,
        message: friendlier(&message),
    }
}

/// The parser's message without its own location suffix (we print ours).
fn plain_message(err: &serde_saphyr::Error) -> String {
    let full = err.without_snippet().to_string();
    let msg = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    msg.trim().to_string()
}

/// The parser's words, in the user's: what is wrong and what is allowed.
fn friendlier(message: &str) -> String {
    if message.starts_with("unknown field") {
        return format!("{message} (a misspelt key is an error, never ignored)");
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("`{key}` is given twice; keep one");
    }
    if message.starts_with("cannot deserialize null") {
        return "is empty (null) where text is needed: give the key and its value".to_string();
    }
    if message.starts_with("missing field") {
        return format!("{message}; it is required (see stacks/example.yaml)");
    }
    let expected = match message {
        "invalid i64" | "invalid u64" | "invalid i32" | "invalid u32" => {
            "must be a whole number, e.g. 30"
        }
        "invalid boolean" => "must be true or false",
        "expected string scalar" => "must be a single text value (put it in quotes if in doubt)",
        "expected mapping start" => {
            "must be a mapping of keys to values (key: value lines, indented)"
        }
        _ => return message.to_string(),
    };
    format!("{expected} ({message})")
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The mapping key on a given line, to name the field of a type error.
/// For a list item, the key of the list it is in.
fn key_at_line(text: &str, line: u64) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let lines: Vec<&str> = text.lines().collect();
    let l = lines.get(index)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    if l.trim_start().starts_with("- ") {
        let parent = lines[..index].iter().rev().find(|p| {
            !p.trim().is_empty() && indent(p) < indent(l) && p.trim_end().ends_with(':')
        })?;
        return key_at_line(
            text,
            (lines[..index].iter().rposition(|x| x == parent)? + 1) as u64,
        );
    }
    let key = l.split(':').next()?.trim();
    if key.is_empty() || key.contains(' ') {
        return None;
    }
    // The keys of the mappings it is in, for the whole path: database.enabled.
    let mut path = key.to_string();
    let mut depth = indent(l);
    for parent in lines[..index].iter().rev() {
        if depth == 0 {
            break;
        }
        let p = parent.trim_end();
        if p.trim().is_empty() || p.trim_start().starts_with('#') || indent(p) >= depth {
            continue;
        }
        depth = indent(p);
        match p.trim().strip_suffix(':') {
            Some(name) if !name.contains(' ') && !name.starts_with('-') => {
                path = format!("{name}.{path}");
            }
            _ => break,
        }
    }
    Some(path)
}

/// A prefix must fit every AWS name it feeds: RDS identifiers (letters,
/// digits, single hyphens, starting with a letter, no trailing hyphen), S3
/// bucket names (lower case) and IAM names.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    const ALLOWED: &str = "lower-case letters, digits and single hyphens, starting with a letter and not ending with a hyphen";
    let bad = |why: &str| {
        Err(format!(
            "{why}; a prefix is {ALLOWED}, 1 to {PREFIX_MAX_LEN} characters"
        ))
    };
    if prefix.is_empty() {
        return bad("is empty");
    }
    if prefix.len() > PREFIX_MAX_LEN {
        return bad(&format!("{:?} is {} characters long", prefix, prefix.len()));
    }
    if !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad(&format!(
            "{prefix:?} does not start with a lower-case letter"
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(&format!("{prefix:?} contains {c:?}"));
    }
    if prefix.ends_with('-') || prefix.contains("--") {
        return bad(&format!("{prefix:?} has a trailing or doubled hyphen"));
    }
    if prefix.starts_with("xn--") || prefix.starts_with("sthree-") {
        return bad(&format!("{prefix:?} starts with a prefix S3 reserves"));
    }
    Ok(())
}

/// S3 bucket naming rules (general purpose buckets).
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    const RULES: &str = "3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit";
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!("{name:?} is not a valid S3 bucket name: {RULES}"));
    }
    if name.contains("..")
        || name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok())
    {
        return Err(format!(
            "{name:?} is not a valid S3 bucket name: no two dots in a row, not an IP address"
        ));
    }
    if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return Err(format!("{name:?} uses a prefix or suffix S3 reserves"));
    }
    Ok(())
}

/// RDS master password rules. The message never contains the password.
pub fn check_password(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if !(8..=128).contains(&len) {
        return Err(format!(
            "must be 8 to 128 characters long (it has {len}); RDS refuses other lengths"
        ));
    }
    if let Some(c) = password.chars().find(|c| !c.is_ascii_graphic()) {
        let what = if c == ' ' {
            "a space".to_string()
        } else if c.is_ascii() {
            "a control character".to_string()
        } else {
            "a non-ASCII character".to_string()
        };
        return Err(format!(
            "contains {what}; RDS allows printable ASCII except space, '/', '\"' and '@'"
        ));
    }
    if let Some(c) = password.chars().find(|c| matches!(c, '/' | '"' | '@')) {
        return Err(format!(
            "contains '{c}'; RDS allows printable ASCII except space, '/', '\"' and '@'"
        ));
    }
    Ok(())
}

fn check_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > 127 {
        return Err("tag keys are 1 to 127 characters".into());
    }
    if key.starts_with("aws:") {
        return Err("tag keys starting with `aws:` are reserved by AWS".into());
    }
    if key == "Name" || key.starts_with("ihp-infra:") {
        return Err(format!(
            "`{key}` is set by ihp-infra itself (Name and ihp-infra:* tags find resources again)"
        ));
    }
    if value.chars().count() > 255 {
        return Err("tag values are at most 255 characters".into());
    }
    // EC2 takes any character, but IAM, CloudWatch Logs, S3 and RDS allow
    // only these, and every resource gets the stack's tags: the strictest
    // rule wins. https://docs.aws.amazon.com/IAM/latest/APIReference/API_Tag.html
    // (pattern [\p{L}\p{Z}\p{N}_.:/=+\-@]*). Unicode's categories, not
    // `char::is_alphabetic`, which also takes the marks of e.g. Devanagari
    // vowels that AWS refuses.
    static ALLOWED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]$").expect("a valid pattern")
    });
    for (what, text) in [("key", key), ("value", value)] {
        let mut buf = [0; 4];
        if let Some(c) = text
            .chars()
            .find(|c| !ALLOWED.is_match(c.encode_utf8(&mut buf)))
        {
            return Err(format!(
                "the tag {what} contains {c:?} (U+{:04X}); tags allow letters, digits, spaces and _ . : / = + - @ \
                 (IAM, CloudWatch Logs, S3 and RDS refuse other characters)",
                u32::from(c)
            ));
        }
        // moto hands such a value back trimmed, and AWS promises nothing
        // either way: wherever it is trimmed, every plan would show a change.
        if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
            return Err(format!(
                "the tag {what} starts or ends with a space; some AWS services trim it, so it \
                 would never match what they keep"
            ));
        }
    }
    Ok(())
}

/// A CloudWatch Logs group name that every call on it accepts.
fn check_log_group(g: &str) -> Result<(), String> {
    let ok = (1..=512).contains(&g.len())
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c));
    if !ok {
        return Err(format!(
            "{g:?} is not a log group name: 1 to 512 letters, digits and _ - / ."
        ));
    }
    // CreateLogGroup takes '#', but the group's ARN then breaks the
    // resourceArn pattern of TagResource and ListTagsForResource
    // ([\w+=/:,.@-]*): the stack could never read its tags again.
    // https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_ListTagsForResource.html
    if g.contains('#') {
        return Err(format!(
            "{g:?} contains '#': CloudWatch Logs creates such a group but can't tag it or read \
             its tags by ARN; use letters, digits and _ - / ."
        ));
    }
    Ok(())
}

/// A valid stack for unit tests elsewhere.
/// For tests, here and in the binary crate (feature "testing").
#[cfg(any(test, feature = "testing"))]
pub fn test_stack(prefix: &str) -> Stack {
    Stack {
        path: "stack.yaml".into(),
        prefix: prefix.into(),
        region: "eu-central-1".into(),
        az_1: "eu-central-1a".into(),
        az_2: "eu-central-1b".into(),
        key_name: "k".into(),
        db_password: Secret::new("password1"),
        tags: BTreeMap::new(),
        instance: Some(InstanceSpec::default()),
        database: Some(DatabaseSpec::default()),
        storage: StorageSpec {
            bucket: format!("{prefix}-storage"),
            public_read: false,
            access_key: true,
            key_file: false,
        },
        logs: LogsSpec {
            group: format!("/ihp/{prefix}"),
            retention_days: 30,
        },
        nixos_module: None,
        ssh_host: "production".into(),
        ssh_key_file: None,
        domain: None,
        backups: None,
        mail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
prefix: demo
region: eu-central-1
az_1: eu-central-1a
az_2: eu-central-1b
key_name: my-key
db_password: \"s3cret-pass\"
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_str(text: &str) -> Result<Stack, Vec<Problem>> {
        parse(Path::new("stack.yaml"), text, &no_env)
    }

    #[test]
    fn database_and_server_can_be_left_out_and_then_need_no_password() {
        let text = VALID.replace("db_password: \"s3cret-pass\"\n", "")
            + "database:\n  enabled: false\n  instance_class: db.t3.small\ninstance: { enabled: false }\n";
        let stack = parse_str(&text).unwrap();
        assert_eq!(stack.database, None);
        assert_eq!(stack.instance, None);
        assert_eq!(stack.db_password.expose(), "");
        // A password that is given is not kept when there is no database.
        let text = VALID.to_string() + "database: { enabled: false }\n";
        assert_eq!(parse_str(&text).unwrap().db_password.expose(), "");
        let text = VALID.to_string() + "database: { enabled: true }\n";
        assert!(parse_str(&text).unwrap().database.is_some());
    }

    #[test]
    fn left_out_parts_are_named_for_people() {
        let mut stack = parse_str(VALID).unwrap();
        assert_eq!(stack.left_out(), None);
        stack.database = None;
        assert_eq!(stack.left_out(), Some("without database"));
        stack.instance = None;
        assert_eq!(stack.left_out(), Some("without server and database"));
        stack.database = Some(DatabaseSpec::default());
        assert_eq!(stack.left_out(), Some("without server"));
    }

    #[test]
    fn database_without_password_says_how_to_leave_the_database_out() {
        let p = one_problem(&VALID.replace("db_password: \"s3cret-pass\"\n", ""));
        assert_eq!(p.field, "db_password");
        assert!(p.message.contains("missing field"), "{}", p.message);
        assert!(p.message.contains("enabled: false"), "{}", p.message);
    }

    #[test]
    fn settings_of_a_left_out_part_are_still_checked() {
        let text = VALID.to_string() + "database:\n  enabled: false\n  allocated_storage: 5\n";
        assert_eq!(one_problem(&text).field, "database.allocated_storage");
        let text = VALID.to_string() + "instance:\n  enabled: maybe\n";
        let p = one_problem(&text);
        assert_eq!((p.line, p.field.as_str()), (8, "instance.enabled"), "{p:?}");
        assert!(p.message.contains("true or false"), "{}", p.message);
    }

    fn one_problem(text: &str) -> Problem {
        let problems = parse_str(text).expect_err("stack should be invalid");
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn domain_with_aliases_zone_and_contact() {
        let stack = parse_str(&format!(
            "{VALID}domain: app.example.org\ndomain_aliases: [www.example.org]\nacme_email: ops@ihp-test.org\ndns_zone: example.org.\n"
        ))
        .unwrap();
        let domain = stack.domain.unwrap();
        assert_eq!(
            domain.names().collect::<Vec<_>>(),
            ["app.example.org", "www.example.org"]
        );
        assert_eq!(
            domain.zone.as_deref(),
            Some("example.org"),
            "the final dot goes"
        );
        assert_eq!(domain.acme_email, "ops@ihp-test.org");
    }

    #[test]
    fn domain_problems_name_their_field() {
        for (extra, field, says) in [
            (
                "domain: App.example.org\nacme_email: a@b.org\n",
                "domain",
                "lower case",
            ),
            (
                "domain: localhost\nacme_email: a@b.org\n",
                "domain",
                "not a host name",
            ),
            (
                "domain: a-.example.org\nacme_email: a@b.org\n",
                "domain",
                "not a host name",
            ),
            (
                "domain: app.example.org\n",
                "acme_email",
                "needs acme_email",
            ),
            (
                "domain: app.example.org\nacme_email: ops@example.com\n",
                "acme_email",
                "Let's Encrypt refuses",
            ),
            (
                "domain: app.example.org\nacme_email: not-an-address\n",
                "acme_email",
                "not an email address",
            ),
            (
                "domain: app.example.org\nacme_email: a@b.org\ndns_zone: other.org\n",
                "dns_zone",
                "app.example.org not in zone other.org",
            ),
            (
                "domain: app.example.org\nacme_email: a@b.org\ndomain_aliases: [app.example.org]\n",
                "domain_aliases",
                "named twice",
            ),
            ("acme_email: a@b.org\n", "acme_email", "needs domain"),
            ("dns_zone: example.org\n", "dns_zone", "needs domain"),
            (
                "domain: app.example.org\nacme_email: a@b.org\ninstance: { enabled: false }\n",
                "domain",
                "needs the server",
            ),
        ] {
            let p = one_problem(&format!("{VALID}{extra}"));
            assert_eq!(p.field, field, "{extra}: {p:?}");
            assert!(p.message.contains(says), "{extra}: {p:?}");
            assert!(p.line > 6, "{extra}: {p:?}");
        }
    }

    #[test]
    fn backups_are_for_postgres_on_the_server() {
        let no_rds = format!("{VALID}database: {{ enabled: false }}\n");
        let stack = parse_str(&format!("{no_rds}backups: {{}}\n")).unwrap();
        assert_eq!(
            stack.backups,
            Some(BackupsSpec {
                bucket: "demo-backups".into(),
                retention_days: 30
            })
        );
        let stack = parse_str(&format!(
            "{no_rds}backups: {{ bucket: my-dumps, retention_days: 7, enabled: false }}\n"
        ))
        .unwrap();
        assert_eq!(stack.backups, None, "enabled: false turns them off");
        for (extra, field, says) in [
            (
                "backups: { retention_days: 7 }\n",
                "backups",
                "with RDS, its automatic backups",
            ),
            (
                "database: { enabled: false }\nbackups: { retention_days: 0 }\n",
                "backups.retention_days",
                "1 to 3650",
            ),
            (
                "database: { enabled: false }\nbackups: { bucket: demo-storage }\n",
                "backups.bucket",
                "is the storage bucket",
            ),
            (
                "database: { enabled: false }\nbackups: { bucket: Bad_Name }\n",
                "backups.bucket",
                "",
            ),
            (
                "database: { enabled: false }\ninstance: { enabled: false }\nbackups: { retention_days: 7 }\n",
                "backups",
                "the stack has none",
            ),
        ] {
            let p = one_problem(&format!("{VALID}{extra}"));
            assert_eq!(p.field, field, "{extra}: {p:?}");
            assert!(p.message.contains(says), "{extra}: {p:?}");
            assert!(p.line > 6, "{extra}: {p:?}");
        }
    }

    #[test]
    fn mail_sends_from_the_domain_unless_told() {
        let with_domain =
            format!("{VALID}domain: app.example.org\nacme_email: ops@ihp-test.org\nmail: {{}}\n");
        let mail = parse_str(&with_domain).unwrap().mail.unwrap();
        assert_eq!(mail.from_domain, "app.example.org");
        assert!(mail.enabled);
        let mail = parse_str(&format!(
            "{VALID}mail: {{ from_domain: example.org, enabled: false }}\n"
        ))
        .unwrap()
        .mail
        .unwrap();
        assert_eq!(
            (mail.from_domain.as_str(), mail.enabled),
            ("example.org", false)
        );
        let p = one_problem(&format!("{VALID}mail: {{ enabled: true }}\n"));
        assert_eq!(p.field, "mail.from_domain");
        assert!(
            p.message.contains("set mail.from_domain, or domain"),
            "{p:?}"
        );
        let p = one_problem(&format!("{VALID}mail: {{ from_domain: Example.org }}\n"));
        assert_eq!(p.field, "mail.from_domain");
    }

    #[test]
    fn host_names_follow_dns() {
        assert!(check_host_name("a.b").is_ok());
        assert!(check_host_name(&format!("{}.org", "a".repeat(63))).is_ok());
        assert!(check_host_name(&format!("{}.org", "a".repeat(64))).is_err());
        assert!(
            check_host_name(&format!("{}org", "a.".repeat(126))).is_err(),
            "over 253"
        );
        assert!(
            check_host_name("203.0.113.7").is_err(),
            "an address is no name"
        );
        assert!(check_host_name("*.example.org").is_err());
        assert!(check_host_name("a..org").is_err());
        assert!(
            check_host_name("ab--cd.org").is_err(),
            "reserved for encodings"
        );
        assert!(check_host_name("xn--bcher-kva.org").is_ok(), "punycode");
    }

    #[test]
    fn valid_stack_parses() {
        let stack = parse_str(VALID).unwrap();
        assert_eq!(stack.prefix, "demo");
        assert_eq!(stack.az_2, "eu-central-1b");
        assert_eq!(stack.db_password.expose(), "s3cret-pass");
        assert_eq!(stack.name("public"), "demo-public");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let stack = parse_str(VALID).unwrap();
        let debug = format!("{stack:?}");
        assert!(!debug.contains("s3cret-pass"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn unknown_key_is_an_error_with_location() {
        let p = one_problem(&format!("{VALID}prefx: oops\n"));
        assert_eq!(p.field, "prefx");
        assert_eq!(p.line, 7);
        assert!(p.message.contains("unknown field"), "{}", p.message);
    }

    #[test]
    fn missing_field_is_named() {
        let text = VALID.replace("key_name: my-key\n", "");
        let p = one_problem(&text);
        assert_eq!(p.field, "key_name");
        assert!(p.message.contains("missing field"), "{}", p.message);
    }

    #[test]
    fn mistyped_field_names_its_line() {
        let text = VALID.replace("key_name: my-key", "key_name: [a, b]");
        let p = one_problem(&text);
        assert_eq!(p.line, 5);
        assert_eq!(p.field, "key_name");
    }

    #[test]
    fn yaml_syntax_error_has_location() {
        let p = one_problem("prefix: demo\nregion: [eu-central-1\n");
        assert!(p.line >= 2, "{p:?}");
    }

    #[test]
    fn prefix_rules() {
        for bad in [
            "",
            "Demo",
            "1demo",
            "de_mo",
            "demo-",
            "de--mo",
            "xn--demo",
            "démo",
            "abcdefghijklmnopqrstuvwxyzabcdefg",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["a", "demo", "my-app-2", "abcdefghijklmnopqrstuvwxyzabcdef"] {
            assert!(check_prefix(good).is_ok(), "{good:?} should pass");
        }
    }

    #[test]
    fn bad_prefix_names_line_and_column() {
        let p = one_problem(&VALID.replace("prefix: demo", "prefix: My_App"));
        assert_eq!((p.line, p.column, p.field.as_str()), (1, 9, "prefix"));
        assert!(p.message.contains("lower-case"), "{}", p.message);
    }

    #[test]
    fn password_rules_never_echo_the_password() {
        for bad in [
            "short",
            "has space in it",
            "with/slash1",
            "with\"quote",
            "with@at-sign",
            "ünïcödé-pass",
        ] {
            let err = check_password(bad).expect_err(bad);
            assert!(!err.contains(bad), "{err}");
        }
        assert!(check_password(&"x".repeat(129)).is_err());
        assert!(check_password(&"x".repeat(128)).is_ok());
        assert!(check_password("Pa$$w0rd!#%^&*()").is_ok());
    }

    #[test]
    fn numeric_password_must_be_quoted() {
        let p = one_problem(&VALID.replace("\"s3cret-pass\"", "12345678"));
        assert_eq!(p.field, "db_password");
        assert!(p.message.contains("quotes"), "{}", p.message);
        assert!(!p.message.contains("12345678"));
    }

    #[test]
    fn password_from_environment() {
        let text = VALID.replace("\"s3cret-pass\"", "{ env: DB_PW }");
        let env = |name: &str| (name == "DB_PW").then(|| "from-env-pass".to_string());
        let stack = parse(Path::new("s.yaml"), &text, &env).unwrap();
        assert_eq!(stack.db_password.expose(), "from-env-pass");

        let p = one_problem(&text);
        assert_eq!(p.field, "db_password");
        assert!(p.message.contains("DB_PW is not set"), "{}", p.message);

        let weak = |_: &str| Some("short".to_string());
        let problems = parse(Path::new("s.yaml"), &text, &weak).unwrap_err();
        assert!(problems[0].message.contains("DB_PW"));
        assert!(!problems[0].message.contains("short\""));
    }

    #[test]
    fn empty_key_found_by_the_fuzzer_is_named() {
        // fuzz/artifacts crash-bad98113: a `?` complex key with nothing in it.
        let text = "?\t\t\t\t\t\t>\r8\r8\t\t\tu\tj\u{1}m";
        let problems = parse(Path::new("s.yaml"), text, &no_env).unwrap_err();
        assert!(
            problems.iter().all(|p| !p.field.trim().is_empty()),
            "{problems:?}"
        );
        let problems = parse(Path::new("s.yaml"), &format!("{VALID}: x\n"), &no_env).unwrap_err();
        assert_eq!(problems[0].field, "(empty key)", "{problems:?}");
        assert!(
            problems[0].message.starts_with("is empty (null)"),
            "{problems:?}"
        );
    }

    #[test]
    fn outputs_need_no_password_variable_but_still_a_valid_literal() {
        let text = VALID.replace("\"s3cret-pass\"", "{ env: DB_PW }");
        let stack = parse_with(Path::new("s.yaml"), &text, &no_env, Password::Unused).unwrap();
        assert_eq!(stack.db_password.expose(), "");
        let bad = VALID.replace("\"s3cret-pass\"", "\"short\"");
        assert!(parse_with(Path::new("s.yaml"), &bad, &no_env, Password::Unused).is_err());
    }

    #[test]
    fn region_must_exist_and_zones_belong_to_it() {
        let p = one_problem(&VALID.replace("region: eu-central-1", "region: eu-middle-1"));
        assert_eq!(p.field, "region");
        assert!(p.message.contains("eu-central-1"), "lists allowed regions");

        let p = one_problem(&VALID.replace("az_2: eu-central-1b", "az_2: us-east-1b"));
        assert_eq!((p.field.as_str(), p.line), ("az_2", 4));
    }

    #[test]
    fn zones_must_differ() {
        let p = one_problem(&VALID.replace("az_2: eu-central-1b", "az_2: eu-central-1a"));
        assert_eq!(p.field, "az_2");
        assert!(p.message.contains("differ"));
    }

    #[test]
    fn all_problems_reported_together_in_file_order() {
        let text = VALID
            .replace("prefix: demo", "prefix: Bad")
            .replace("\"s3cret-pass\"", "\"x\"");
        let problems = parse_str(&text).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["prefix", "db_password"]);
    }

    #[test]
    fn reserved_tags_refused() {
        let p = one_problem(&format!("{VALID}tags:\n  Name: x\n"));
        assert_eq!(p.field, "tags.Name");
        let stack = parse_str(&format!("{VALID}tags:\n  team: web\n")).unwrap();
        assert_eq!(stack.tags["team"], "web");
    }

    #[test]
    fn tags_only_in_the_characters_every_service_takes() {
        let p = one_problem(&format!("{VALID}tags:\n  team: \"R&D (web), #3!\"\n"));
        assert_eq!(p.field, "tags.team");
        assert!(p.message.contains("value contains '&'"), "{}", p.message);
        let p = one_problem(&format!("{VALID}tags:\n  \"cost#center\": web\n"));
        assert!(p.message.contains("key contains '#'"), "{}", p.message);
        // Letters of any script, digits, spaces and AWS's punctuation pass.
        let ok = "Équipe web_2: a/b=c+d-e@f.g";
        let stack = parse_str(&format!("{VALID}tags:\n  team: \"{ok}\"\n")).unwrap();
        assert_eq!(stack.tags["team"], ok);
    }

    #[test]
    fn tag_characters_are_unicode_categories_as_aws_names_them() {
        // \p{L}, \p{Z}, \p{N}: a no-break space and CJK pass ...
        let ok = "東京\u{a0}チーム ٣";
        let stack = parse_str(&format!("{VALID}tags:\n  team: \"{ok}\"\n")).unwrap();
        assert_eq!(stack.tags["team"], ok);
        // ... a vowel sign (a mark, alphabetic to Rust) does not.
        let p = one_problem(&format!("{VALID}tags:\n  team: \"हिंदी\"\n"));
        assert!(p.message.contains("(U+093F)"), "{}", p.message);
        for edge in ["\" web\"", "\"web \""] {
            let p = one_problem(&format!("{VALID}tags:\n  team: {edge}\n"));
            assert!(
                p.message.contains("starts or ends with a space"),
                "{}",
                p.message
            );
        }
    }

    #[test]
    fn tags_leave_room_for_ihp_infras_own() {
        let tags = |n: usize| -> String { (1..=n).map(|i| format!("  t{i:02}: x\n")).collect() };
        let most = MAX_TAGS - OWN_TAGS;
        assert_eq!(most, 47);
        let stack = parse_str(&format!("{VALID}tags:\n{}", tags(most))).unwrap();
        assert_eq!(stack.tags.len(), most);
        let p = one_problem(&format!("{VALID}tags:\n{}", tags(most + 1)));
        assert_eq!(p.field, "tags");
        assert!(
            p.message.contains("48 tags given; at most 47"),
            "{}",
            p.message
        );
    }

    #[test]
    fn log_group_with_hash_is_refused() {
        let p = one_problem(&format!("{VALID}logs:\n  group: \"/ihp/app#1\"\n"));
        assert_eq!(p.field, "logs.group");
        assert!(p.message.contains("contains '#'"), "{}", p.message);
        let stack = parse_str(&format!("{VALID}logs:\n  group: /ihp/app_1.x-y\n")).unwrap();
        assert_eq!(stack.logs.group, "/ihp/app_1.x-y");
    }

    #[test]
    fn username_follows_create_db_instance() {
        let at = |u: &str| parse_str(&format!("{VALID}database:\n  username: {u}\n"));
        assert_eq!(
            at("abcdefghijklmnop")
                .unwrap()
                .database
                .unwrap()
                .username
                .len(),
            16
        );
        let p = one_problem(&format!(
            "{VALID}database:\n  username: abcdefghijklmnopq\n"
        ));
        assert_eq!(p.field, "database.username");
        assert!(p.message.contains("1 to 16 letters"), "{}", p.message);
    }

    #[test]
    fn instance_and_database_defaults() {
        let stack = parse_str(VALID).unwrap();
        assert_eq!(stack.instance, Some(InstanceSpec::default()));
        assert_eq!(stack.instance.as_ref().unwrap().instance_type, "t3.medium");
        // IHP's guide's advice and the RDS console's, not the API's.
        assert_eq!(stack.instance.as_ref().unwrap().volume_size_gb, 60);
        assert_eq!(stack.database.as_ref().unwrap().backup_retention_days, 7);
        assert_eq!(stack.database.as_ref().unwrap().engine_version, "16");
        assert_eq!(stack.database.as_ref().unwrap().username, "postgres_user");
    }

    #[test]
    fn instance_and_database_sections() {
        let text = format!(
            "{VALID}instance:\n  type: t4g.small\n  volume_size: 50\n  nixos_release: \"26.05\"\n  architecture: arm64\ndatabase:\n  engine_version: \"16.4\"\n  instance_class: db.t4g.micro\n  allocated_storage: 40\n  username: app\n"
        );
        let stack = parse_str(&text).unwrap();
        assert_eq!(stack.instance.as_ref().unwrap().instance_type, "t4g.small");
        assert_eq!(stack.instance.as_ref().unwrap().volume_size_gb, 50);
        assert_eq!(
            stack.instance.as_ref().unwrap().image,
            ImageChoice::Nixos {
                release: Some("26.05".into()),
                architecture: Some("arm64".into())
            }
        );
        assert_eq!(stack.database.as_ref().unwrap().allocated_storage_gb, 40);
        assert_eq!(stack.database.as_ref().unwrap().username, "app");
    }

    #[test]
    fn bad_instance_and_database_values_are_located() {
        let text = format!(
            "{VALID}instance:\n  volume_size: 4\n  architecture: amd64\ndatabase:\n  engine_version: \"sixteen\"\n  username: rdsadmin\n"
        );
        let problems = parse_str(&text).unwrap_err();
        let fields: Vec<_> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.line))
            .collect();
        assert_eq!(
            fields,
            [
                ("instance.volume_size", 8),
                ("instance.architecture", 9),
                ("database.engine_version", 11),
                ("database.username", 12)
            ]
        );
    }

    #[test]
    fn pinned_ami_excludes_release() {
        let p = one_problem(&format!(
            "{VALID}instance:\n  ami: ami-0123456789abcdef0\n  nixos_release: \"26.05\"\n"
        ));
        assert_eq!(p.field, "instance");
        let stack =
            parse_str(&format!("{VALID}instance:\n  ami: ami-0123456789abcdef0\n")).unwrap();
        assert_eq!(
            stack.instance.as_ref().unwrap().image,
            ImageChoice::Ami("ami-0123456789abcdef0".into())
        );
    }

    #[test]
    fn unknown_key_in_a_section_is_an_error() {
        let p = one_problem(&format!("{VALID}instance:\n  typ: t3.small\n"));
        assert_eq!(p.field, "typ");
        assert_eq!(p.line, 8);
    }

    #[test]
    fn hand_over_settings_are_checked_where_they_stand() {
        let stack = parse_str(&format!(
            "{VALID}instance:\n  egress_ports: [2525, 587, 2525]\ndatabase:\n  backup_retention_days: 0\nnixos_module: infra/ihp-infra.nix\n"
        ))
        .unwrap();
        // 587 is always open; a port listed twice is one rule.
        assert_eq!(stack.instance.unwrap().egress_ports, [2525]);
        assert_eq!(stack.database.unwrap().backup_retention_days, 0);
        assert_eq!(
            stack.nixos_module,
            Some(PathBuf::from("infra/ihp-infra.nix"))
        );
        let p = one_problem(&format!("{VALID}instance:\n  egress_ports: [0]\n"));
        assert_eq!(p.field, "instance.egress_ports");
        assert!(p.message.contains("1 to 65535"), "{}", p.message);
        let p = one_problem(&format!("{VALID}database:\n  backup_retention_days: 36\n"));
        assert_eq!(p.field, "database.backup_retention_days");
        let p = one_problem(&format!(
            "{VALID}storage:\n  access_key: false\n  key_file: true\n"
        ));
        assert_eq!((p.field.as_str(), p.line), ("storage.key_file", 9));
        let p = one_problem(&format!("{VALID}nixos_module: ihp-infra.txt\n"));
        assert_eq!(p.field, "nixos_module");
    }

    #[test]
    fn storage_and_logs_defaults_and_overrides() {
        let stack = parse_str(VALID).unwrap();
        assert_eq!(stack.storage.bucket, "demo-storage");
        // IHP's S3 storage reads only static keys: a key by default.
        assert!(!stack.storage.public_read && stack.storage.access_key);
        assert!(!stack.storage.key_file);
        assert_eq!(stack.nixos_module, None);
        assert_eq!(stack.logs.group, "/ihp/demo");
        assert_eq!(stack.logs.retention_days, 30);
        let stack = parse_str(&format!(
            "{VALID}storage:\n  bucket: my.files-1\n  public_read: true\n  access_key: true\nlogs:\n  group: my-logs\n  retention_days: 90\n"
        ))
        .unwrap();
        assert_eq!(stack.storage.bucket, "my.files-1");
        assert!(stack.storage.public_read && stack.storage.access_key);
        assert_eq!(
            (stack.logs.group.as_str(), stack.logs.retention_days),
            ("my-logs", 90)
        );
    }

    #[test]
    fn bad_bucket_names_and_retention_are_located() {
        for bad in [
            "ab",
            "My-Bucket",
            "-bucket",
            "a..b",
            "192.168.1.1",
            "xn--bucket",
            "b-s3alias",
            "under_score",
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        let p = one_problem(&format!("{VALID}logs:\n  retention_days: 31\n"));
        assert_eq!((p.field.as_str(), p.line), ("logs.retention_days", 8));
        assert!(
            p.message.contains("30, 60"),
            "lists the allowed values: {}",
            p.message
        );
        let p = one_problem(&format!("{VALID}storage:\n  bucket: Bad_Name\n"));
        assert_eq!((p.field.as_str(), p.line), ("storage.bucket", 8));
    }

    #[test]
    fn rendered_error_names_file_line_column_field() {
        let err = StackError::Invalid {
            path: PathBuf::from("stack.yaml"),
            problems: vec![Problem {
                line: 1,
                column: 9,
                field: "prefix".into(),
                message: "is bad".into(),
            }],
        };
        assert_eq!(
            err.to_string(),
            "invalid stack file stack.yaml (1 problem)\n  stack.yaml:1:9: prefix: is bad"
        );
    }

    #[test]
    fn json_schema_is_generated_from_the_stack_types() {
        let mut schema = schemars::schema_for!(RawStack);
        schema.insert("title".into(), "ihp-infra stack file".into());
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/stack.schema.json");
        if std::env::var_os("IHP_INFRA_UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        assert!(
            SCHEMA == text,
            "crates/core/stack.schema.json is out of date: run IHP_INFRA_UPDATE_SCHEMA=1 cargo test -p ihp-infra-core json_schema"
        );
        // It knows every key the example uses, and nothing else is allowed.
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["additionalProperties"], false, "{text}");
        for key in [
            "prefix",
            "db_password",
            "instance",
            "database",
            "storage",
            "logs",
        ] {
            assert!(json["properties"][key].is_object(), "{key}");
        }
        assert_eq!(
            json["required"],
            serde_json::json!(["prefix", "region", "az_1", "az_2", "key_name"])
        );
    }
}
