//! `ihp-infra adopt`: a stack made by the IHP boilerplate's Terraform (or
//! by hand in the console) becomes an ihp-infra stack, nothing replaced.
//!
//! Taking over a resource means tagging it as ihp-infra tags what it
//! makes (the stack tag and `Name=<prefix>-<role>`, by which it is found
//! again), plus what records its choices (the image, the password's
//! hash). Where the stack's defaults would replace something (an
//! unencrypted database, the subnet group named `main`, a pinned image),
//! the stack file gets the setting that keeps the live value. The normal
//! plan does everything else in place.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::model::Address;
use crate::stack::{ImageChoice, Secret, Stack};

/// What a Terraform state says about the boilerplate's resources.
#[derive(Debug)]
pub struct TerraformState {
    /// Managed resources: (`aws_vpc.main`, its id), in the state's order.
    pub resources: Vec<(String, String)>,
    pub instance: Option<String>,
    pub database: Option<String>,
    /// The database's password: Terraform keeps it in clear.
    pub db_password: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not JSON, so neither a terraform.tfstate nor `terraform show -json` output: {source}"
    )]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} is neither a terraform.tfstate (version 4) nor `terraform show -json` output; {what}"
    )]
    Unknown { path: String, what: String },
    #[error(
        "{path} holds {count} {kind} resources ({addresses}); adopt takes one server and one database: pass --instance and --database"
    )]
    Ambiguous {
        path: String,
        count: usize,
        kind: &'static str,
        addresses: String,
    },
}

impl TerraformState {
    pub fn read(path: &std::path::Path) -> Result<TerraformState, StateError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// Reads either format, told apart by content: a state file has
    /// `version` and `resources[].instances[].attributes`; `terraform show
    /// -json` has `format_version` and `values.root_module`.
    pub fn parse(path: &str, text: &str) -> Result<TerraformState, StateError> {
        let json: Json = serde_json::from_str(text).map_err(|source| StateError::NotJson {
            path: path.to_string(),
            source,
        })?;
        let unknown = |what: String| StateError::Unknown {
            path: path.to_string(),
            what,
        };
        // (type, name, attributes) of every managed resource.
        let mut found: Vec<(String, String, Json)> = Vec::new();
        if let Some(version) = json.get("version").and_then(Json::as_u64) {
            if version != 4 {
                return Err(unknown(format!(
                    "it is a state of version {version}; run `terraform state pull` with Terraform 0.12 or newer"
                )));
            }
            for r in json
                .get("resources")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                if r.get("mode").and_then(Json::as_str) != Some("managed") {
                    continue;
                }
                let (Some(ty), Some(name)) = (
                    r.get("type").and_then(Json::as_str),
                    r.get("name").and_then(Json::as_str),
                ) else {
                    continue;
                };
                for i in r
                    .get("instances")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = i.get("attributes") {
                        found.push((ty.into(), name.into(), a.clone()));
                    }
                }
            }
        } else if json.get("format_version").is_some() {
            let mut modules: Vec<&Json> = json.pointer("/values/root_module").into_iter().collect();
            while let Some(m) = modules.pop() {
                for r in m
                    .get("resources")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    if r.get("mode").and_then(Json::as_str) != Some("managed") {
                        continue;
                    }
                    if let (Some(ty), Some(name), Some(values)) = (
                        r.get("type").and_then(Json::as_str),
                        r.get("name").and_then(Json::as_str),
                        r.get("values"),
                    ) {
                        found.push((ty.into(), name.into(), values.clone()));
                    }
                }
                modules.extend(
                    m.get("child_modules")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten(),
                );
            }
        } else {
            return Err(unknown(
                "it has neither `version` nor `format_version`".into(),
            ));
        }
        let text_of = |a: &Json, key: &str| a.get(key).and_then(Json::as_str).map(str::to_string);
        let one = |kind: &'static str, ty: &str| -> Result<Option<&Json>, StateError> {
            let all: Vec<&(String, String, Json)> =
                found.iter().filter(|(t, _, _)| t == ty).collect();
            match all.as_slice() {
                [] => Ok(None),
                [(_, _, a)] => Ok(Some(a)),
                many => Err(StateError::Ambiguous {
                    path: path.to_string(),
                    count: many.len(),
                    kind,
                    addresses: many
                        .iter()
                        .map(|(t, n, _)| format!("{t}.{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        };
        let instance = one("aws_instance", "aws_instance")?.and_then(|a| text_of(a, "id"));
        let db = one("aws_db_instance", "aws_db_instance")?;
        Ok(TerraformState {
            instance,
            database: db.and_then(|a| text_of(a, "identifier")),
            db_password: db
                .and_then(|a| text_of(a, "password"))
                .filter(|p| !p.is_empty())
                .map(Secret::new),
            resources: found
                .iter()
                .filter_map(|(t, n, a)| {
                    // A database's `id` is RDS's resource id (db-…);
                    // ihp-infra knows it by its identifier.
                    let id = match t.as_str() {
                        "aws_db_instance" => text_of(a, "identifier").or_else(|| text_of(a, "id")),
                        _ => text_of(a, "id"),
                    };
                    Some((format!("{t}.{n}"), id?))
                })
                .collect(),
        })
    }

    /// The state's address of the resource with this id, if it has it.
    pub fn address_of(&self, id: &str) -> Option<&str> {
        self.resources
            .iter()
            .find(|(_, i)| i == id)
            .map(|(a, _)| a.as_str())
    }
}

/// One live resource adopt takes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub address: Address,
    pub id: String,
    /// What it was known as: its Terraform address, or its Name tag.
    pub known_as: String,
    /// The tags it gets (those it lacks or that differ).
    pub tags: BTreeMap<String, String>,
}

/// What the live server and database are, where the stack's defaults
/// could replace them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub image_id: Option<String>,
    pub instance_type: Option<String>,
    pub root_volume_encrypted: Option<bool>,
    pub root_volume_size: Option<i32>,
    pub db_allocated_storage: Option<i32>,
    pub db_engine_version: Option<String>,
    pub db_instance_class: Option<String>,
    pub db_username: Option<String>,
    pub db_storage_encrypted: Option<bool>,
    pub db_subnet_group: Option<String>,
}

/// A line adopt writes into the stack file's `instance:` or `database:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    /// As YAML (quoted where YAML would read another type).
    pub value: String,
    pub why: String,
    /// Whether it overrides a value the file sets: true where the file's
    /// value would replace the live resource; false for what only sizes
    /// it (a type the stack file chose on purpose stays).
    pub overrides: bool,
}

/// The settings that keep the live server and database as they are.
pub fn settings(stack: &Stack, live: &Live) -> Vec<Setting> {
    let mut out = Vec::new();
    let mut set = |section, key, value: String, why: String, overrides| {
        out.push(Setting {
            section,
            key,
            value,
            why,
            overrides,
        })
    };
    if let Some(server) = &stack.instance {
        if let Some(image) = &live.image_id
            && server.image != ImageChoice::Ami(image.clone())
        {
            set(
                "instance",
                "ami",
                image.clone(),
                "the server runs this image; another image choice would replace the server".into(),
                true,
            );
        }
        if live.root_volume_encrypted == Some(false) && server.root_volume_encrypted {
            set(
                "instance",
                "root_volume_encrypted",
                "false".into(),
                "the disk is not encrypted, and EC2 can't encrypt it in place (a new server from an encrypted copy of a snapshot can)".into(),
                true,
            );
        }
        if let Some(size) = live.root_volume_size
            && size > server.volume_size_gb
        {
            set(
                "instance",
                "volume_size",
                size.to_string(),
                "the server's disk is this big; EC2 can't shrink a disk".into(),
                true,
            );
        }
        if let Some(t) = &live.instance_type
            && *t != server.instance_type
        {
            set(
                "instance",
                "type",
                t.clone(),
                "the server's type; a change stops and starts it".into(),
                false,
            );
        }
    }
    if let Some(db) = &stack.database {
        if live.db_storage_encrypted == Some(false) && db.storage_encrypted {
            set(
                "database",
                "storage_encrypted",
                "false".into(),
                "the database is not encrypted, and RDS can't encrypt it in place: restore an encrypted copy of a snapshot to encrypt it".into(),
                true,
            );
        }
        if let Some(u) = &live.db_username
            && *u != db.username
        {
            set(
                "database",
                "username",
                u.clone(),
                "the database's master user; a new one would replace the database".into(),
                true,
            );
        }
        if let Some(g) = &live.db_subnet_group
            && *g != crate::desired::db_subnet_group_name(stack)
        {
            set(
                "database",
                "subnet_group",
                yaml_string(g),
                "the database's subnet group; RDS can't move a database to another group in the same VPC".into(),
                true,
            );
        }
        if let Some(gb) = live.db_allocated_storage
            && gb > db.allocated_storage_gb
        {
            set(
                "database",
                "allocated_storage",
                gb.to_string(),
                "the database's storage is this big; RDS can't shrink storage".into(),
                true,
            );
        }
        if let Some(c) = &live.db_instance_class
            && *c != db.instance_class
        {
            set(
                "database",
                "instance_class",
                c.clone(),
                "the database's class; a change restarts it".into(),
                false,
            );
        }
        if let Some(v) = &live.db_engine_version {
            let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u64>().ok());
            let newer_major = major(v) > major(&db.engine_version);
            if newer_major || !crate::model::version_meets(v, &db.engine_version) {
                set(
                    "database",
                    "engine_version",
                    yaml_string(v),
                    if newer_major {
                        "the database's version; RDS can't downgrade a major version"
                    } else {
                        "the database's version; a newer setting upgrades it in place"
                    }
                    .into(),
                    newer_major,
                );
            }
        }
    }
    out
}

/// A YAML double-quoted string (versions like 16.3 would read as numbers).
fn yaml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Why the stack file couldn't be edited.
#[derive(Debug, thiserror::Error)]
#[error(
    "can't add {key} to `{section}:` in the stack file (line {line}: only a block section, `{section}:` followed by indented lines, can be edited); add it by hand:\n{lines}"
)]
pub struct EditError {
    pub section: String,
    pub key: String,
    pub line: usize,
    pub lines: String,
}

/// The stack file's text with `settings` in it: a key the section has is
/// changed where the setting overrides it (and left alone where it
/// doesn't), a missing one is added at the top of its section, a missing
/// section at the end. Comments and everything else stay as they are.
/// Returns the text and the settings that changed it.
pub fn edit_stack_text<'a>(
    text: &str,
    settings: &'a [Setting],
) -> Result<(String, Vec<&'a Setting>), EditError> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut applied = Vec::new();
    for s in settings {
        let header = lines.iter().position(|l| {
            l.strip_prefix(s.section)
                .and_then(|r| r.strip_prefix(':'))
                .is_some()
        });
        let line = format!("{}: {}", s.key, s.value);
        let Some(header) = header else {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(format!("{}:", s.section));
            lines.push(format!("  {line}"));
            applied.push(s);
            continue;
        };
        let rest = lines[header][s.section.len() + 1..].trim();
        if !(rest.is_empty() || rest.starts_with('#')) {
            return Err(EditError {
                section: s.section.into(),
                key: s.key.into(),
                line: header + 1,
                lines: format!("{}:\n  {line}", s.section),
            });
        }
        // The section's block: indented lines, blank lines and comments.
        let end = (header + 1..lines.len())
            .find(|&i| {
                let l = &lines[i];
                !(l.trim().is_empty() || l.starts_with([' ', '\t']) || l.starts_with('#'))
            })
            .unwrap_or(lines.len());
        let indent = (header + 1..end)
            .map(|i| &lines[i])
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l[..l.len() - l.trim_start().len()].to_string())
            .unwrap_or_else(|| "  ".into());
        let existing = (header + 1..end).find(|&i| {
            lines[i]
                .strip_prefix(indent.as_str())
                .and_then(|l| l.strip_prefix(s.key))
                .is_some_and(|l| l.trim_start().starts_with(':'))
        });
        match existing {
            Some(i) if s.overrides => {
                lines[i] = format!("{indent}{line}");
                applied.push(s);
            }
            Some(_) => {}
            None => {
                lines.insert(header + 1, format!("{indent}{line}"));
                applied.push(s);
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok((out, applied))
}

/// What adopt will do, for people: the resources taken over, the stack
/// file's new settings, and what happens to the password.
pub fn render(takeovers: &[Takeover], settings: &[&Setting], notes: &[String]) -> String {
    let mut out = String::new();
    if !takeovers.is_empty() {
        let _ = writeln!(out, "adopt takes over {} resources:", takeovers.len());
        let width = takeovers
            .iter()
            .map(|t| t.address.to_string().len())
            .max()
            .unwrap_or(0);
        let ids = takeovers.iter().map(|t| t.id.len()).max().unwrap_or(0);
        for t in takeovers {
            let _ = writeln!(
                out,
                "  {:width$}  {:ids$}  (was {})",
                t.address.to_string(),
                t.id,
                t.known_as
            );
        }
    }
    if !settings.is_empty() {
        let _ = writeln!(out, "\nthe stack file gets, to keep what is live:");
        for s in settings {
            let _ = writeln!(out, "  {}.{}: {}", s.section, s.key, s.value);
            let _ = writeln!(out, "      {}", s.why);
        }
    }
    for n in notes {
        let _ = writeln!(out, "\n{n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE_V4: &str = r#"{
      "version": 4, "terraform_version": "1.11.4", "serial": 9,
      "resources": [
        {"mode": "data", "type": "aws_ami", "name": "nixos", "instances": [{"attributes": {"id": "ami-1"}}]},
        {"mode": "managed", "type": "aws_vpc", "name": "main", "instances": [{"attributes": {"id": "vpc-1"}}]},
        {"mode": "managed", "type": "aws_instance", "name": "ihp_app", "instances": [{"attributes": {"id": "i-1"}}]},
        {"mode": "managed", "type": "aws_db_instance", "name": "postgres",
         "instances": [{"attributes": {"id": "db-ABC", "identifier": "demo-postgres-db", "password": "s3cret"}}]}
      ]
    }"#;

    #[test]
    fn reads_a_state_file() {
        let s = TerraformState::parse("terraform.tfstate", STATE_V4).unwrap();
        assert_eq!(s.instance.as_deref(), Some("i-1"));
        assert_eq!(s.database.as_deref(), Some("demo-postgres-db"));
        assert_eq!(s.db_password.unwrap().expose(), "s3cret");
        assert_eq!(s.resources.len(), 3, "data sources are not resources");
        assert_eq!(
            TerraformState::parse("x", STATE_V4)
                .unwrap()
                .address_of("vpc-1"),
            Some("aws_vpc.main")
        );
    }

    #[test]
    fn reads_terraform_show_json() {
        let shown = r#"{"format_version": "1.0", "values": {"root_module": {
            "resources": [{"address": "aws_instance.ihp_app", "mode": "managed", "type": "aws_instance", "name": "ihp_app", "values": {"id": "i-2"}}],
            "child_modules": [{"resources": [{"mode": "managed", "type": "aws_db_instance", "name": "db",
                "values": {"id": "db-X", "identifier": "x-postgres-db", "password": "p"}}]}]}}}"#;
        let s = TerraformState::parse("show.json", shown).unwrap();
        assert_eq!(s.instance.as_deref(), Some("i-2"));
        assert_eq!(s.database.as_deref(), Some("x-postgres-db"));
        assert_eq!(s.db_password.unwrap().expose(), "p");
    }

    #[test]
    fn other_json_and_old_states_are_refused_with_why() {
        let e = TerraformState::parse("a.json", r#"{"hello": 1}"#).unwrap_err();
        assert!(e.to_string().contains("neither `version` nor"), "{e}");
        let e = TerraformState::parse("a.json", r#"{"version": 3, "modules": []}"#).unwrap_err();
        assert!(e.to_string().contains("version 3"), "{e}");
        let e = TerraformState::parse("a.json", "not json").unwrap_err();
        assert!(e.to_string().contains("is not JSON"), "{e}");
        let two = r#"{"version": 4, "resources": [
            {"mode": "managed", "type": "aws_instance", "name": "a", "instances": [{"attributes": {"id": "i-1"}}]},
            {"mode": "managed", "type": "aws_instance", "name": "b", "instances": [{"attributes": {"id": "i-2"}}]}]}"#;
        let e = TerraformState::parse("t", two).unwrap_err();
        assert!(
            e.to_string().contains("aws_instance.a, aws_instance.b"),
            "{e}"
        );
    }

    fn setting(section: &'static str, key: &'static str, value: &str, overrides: bool) -> Setting {
        Setting {
            section,
            key,
            value: value.into(),
            why: String::new(),
            overrides,
        }
    }

    #[test]
    fn edits_keep_comments_and_add_what_is_missing() {
        let text = "prefix: demo # the app\ndatabase:\n    # sizes\n    instance_class: db.t4g.small\n    username: app\nlogs:\n  retention_days: 7\n";
        let settings = [
            setting("database", "username", "postgres_user", true),
            setting("database", "instance_class", "db.t3.micro", false),
            setting("database", "storage_encrypted", "false", true),
            setting("instance", "ami", "ami-12345678", true),
        ];
        let (out, applied) = edit_stack_text(text, &settings).unwrap();
        assert_eq!(
            out,
            "prefix: demo # the app\ndatabase:\n    storage_encrypted: false\n    # sizes\n    instance_class: db.t4g.small\n    username: postgres_user\nlogs:\n  retention_days: 7\n\ninstance:\n  ami: ami-12345678\n"
        );
        let keys: Vec<&str> = applied.iter().map(|s| s.key).collect();
        assert_eq!(keys, ["username", "storage_encrypted", "ami"]);
        // Again: nothing more to do.
        let (again, _) = edit_stack_text(&out, &settings[..2]).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn a_flow_section_is_not_edited_but_explained() {
        let e = edit_stack_text(
            "instance: {type: t3.small}\n",
            &[setting("instance", "ami", "ami-12345678", true)],
        )
        .unwrap_err();
        assert_eq!(e.line, 1);
        assert!(
            e.to_string().contains("instance:\n  ami: ami-12345678"),
            "{e}"
        );
    }

    #[test]
    fn settings_keep_what_the_defaults_would_replace() {
        let stack = crate::stack::test_stack("demo");
        let live = Live {
            image_id: Some("ami-0123456789abcdef0".into()),
            instance_type: Some("t3.medium".into()),
            root_volume_encrypted: Some(false),
            root_volume_size: Some(30),
            db_allocated_storage: Some(20),
            db_engine_version: Some("16.3".into()),
            db_instance_class: Some("db.t3.micro".into()),
            db_username: Some("postgres_user".into()),
            db_storage_encrypted: Some(false),
            db_subnet_group: Some("main".into()),
        };
        let got: Vec<(String, String)> = settings(&stack, &live)
            .into_iter()
            .map(|s| (format!("{}.{}", s.section, s.key), s.value))
            .collect();
        let want = [
            ("instance.ami", "ami-0123456789abcdef0"),
            ("instance.root_volume_encrypted", "false"),
            ("database.storage_encrypted", "false"),
            ("database.subnet_group", "\"main\""),
        ];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        // The edited file parses, and then asks for nothing more.
        let (text, _) = edit_stack_text(
            "prefix: demo\nregion: eu-west-1\naz_1: eu-west-1a\naz_2: eu-west-1b\nkey_name: k\ndb_password: { env: PW }\n",
            &settings(&stack, &live),
        )
        .unwrap();
        let env = |_: &str| Some("a-password-of-16+".to_string());
        let edited = crate::stack::parse(std::path::Path::new("s.yaml"), &text, &env).unwrap();
        assert_eq!(settings(&edited, &live), []);
    }
}
