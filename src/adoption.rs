//! `ihp-infra adopt`: finds a stack the IHP boilerplate's Terraform made
//! (or one made by hand), works out what taking it over means (the tags,
//! the stack file's settings, the password) and the plan that follows,
//! and then tags. Tagging is idempotent: a run killed half-way is
//! finished by the next, and a stack adopted already is left alone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::adopt::{self, Setting, Takeover, TerraformState};
use crate::aws::Aws;
use crate::aws::ec2::adopt::Found;
use crate::aws::ec2::instance::IMAGE_TAG;
use crate::model::Kind;
use crate::plan::Plan;
use crate::stack::{STACK_TAG, Stack};
use crate::{desired, password};

/// Where adopt starts from.
pub enum Source {
    /// A `terraform.tfstate` or `terraform show -json` output.
    Terraform(PathBuf),
    /// The console-made variant: the server and database named by hand.
    Named {
        instance: Option<String>,
        database: Option<String>,
    },
    /// The boilerplate's Name tags and the database's identifier.
    Tags,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] adopt::StateError),
    #[error(transparent)]
    Edit(#[from] adopt::EditError),
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: the stack file adopt edited is not valid: {0}")]
    Edited(String),
    #[error("nothing to adopt for stack {prefix} in {region}: {what}")]
    NothingFound {
        prefix: String,
        region: String,
        what: String,
    },
    #[error("two servers could be the boilerplate's ({a}, {b}); name one with --instance")]
    TwoServers { a: String, b: String },
    #[error(
        "{address} {id} belongs to stack {other} (it carries {STACK_TAG}={other}); adopt never takes over another stack's resources"
    )]
    OtherStack {
        address: String,
        id: String,
        other: String,
    },
    #[error("stack {prefix} can't be adopted as it is:\n  - {}", problems.join("\n  - "))]
    Problems {
        prefix: String,
        problems: Vec<String>,
    },
}

/// What adopt will do, worked out before anything changes.
pub struct Adoption {
    pub takeovers: Vec<Takeover>,
    /// Where each takeover's tags go: an EC2 id or an RDS ARN.
    targets: Vec<Target>,
    pub settings: Vec<Setting>,
    /// The stack file's new text, when settings change it.
    pub stack_text: Option<String>,
    /// The stack as it will read.
    pub stack: Stack,
    pub notes: Vec<String>,
    /// Whether apply will set db_password as the database's master
    /// password (no state to compare it with, or it differs).
    pub resets_password: bool,
    pub plan: Plan,
}

#[derive(Clone)]
enum Target {
    Ec2(String),
    Rds { arn: String, name: String },
    Bucket(String),
    LogGroup(String),
}

impl Adoption {
    pub fn nothing_to_do(&self) -> bool {
        self.takeovers.is_empty() && self.stack_text.is_none()
    }

    pub fn render(&self) -> String {
        let applied: Vec<&Setting> = self.settings.iter().collect();
        adopt::render(&self.takeovers, &applied, &self.notes)
    }

    /// Writes the stack file's settings, then the tags. The settings come
    /// first: with them and without the tags, nothing is taken over yet
    /// and the next adopt finds the same; the tags go on one resource at
    /// a time, each call complete in itself.
    pub async fn carry_out(&self, aws: &Aws) -> Result<(), crate::Error> {
        if let Some(text) = &self.stack_text {
            let path = &self.stack.path;
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o600);
            crate::db_info::write_with_mode(path, text, mode).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        }
        // One at a time: a dozen calls, once per stack; a run killed in
        // between leaves some tagged, which the next run sees as the
        // stack's and leaves alone.
        for (takeover, target) in self.takeovers.iter().zip(&self.targets) {
            match target {
                Target::Ec2(id) => aws
                    .ec2()
                    .add_tags(id, &takeover.tags)
                    .await
                    .map_err(aws_error)?,
                Target::Rds { arn, name } => aws
                    .rds()
                    .add_tags(arn, &takeover.tags, name)
                    .await
                    .map_err(aws_error)?,
                Target::Bucket(name) => aws
                    .s3()
                    .add_tags(name, &takeover.tags)
                    .await
                    .map_err(aws_error)?,
                Target::LogGroup(name) => aws
                    .logs()
                    .add_tags(name, &takeover.tags)
                    .await
                    .map_err(aws_error)?,
            }
        }
        Ok(())
    }
}

/// Finds what to take over and works out the adoption, through `aws`
/// (whose overlay then shows the plan as it will be).
pub async fn prepare(
    aws: &Aws,
    stack: &Stack,
    source: &Source,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Adoption, crate::Error> {
    let nothing = |what: &str| Error::NothingFound {
        prefix: stack.prefix.clone(),
        region: stack.region.clone(),
        what: what.to_string(),
    };
    let state = match source {
        Source::Terraform(path) => Some(TerraformState::read(path).map_err(Error::from)?),
        _ => None,
    };
    let (instance, database) = match (source, &state) {
        (Source::Terraform(_), Some(state)) => (state.instance.clone(), state.database.clone()),
        (Source::Named { instance, database }, _) => (instance.clone(), database.clone()),
        _ => {
            let servers = aws
                .ec2()
                .find_boilerplate_server()
                .await
                .map_err(aws_error)?;
            if let [a, b, ..] = servers.as_slice() {
                return Err(Error::TwoServers {
                    a: a.clone(),
                    b: b.clone(),
                }
                .into());
            }
            (
                servers.first().cloned(),
                Some(desired::database_identifier(stack)),
            )
        }
    };
    let explicit = !matches!(source, Source::Tags);
    let mut problems = Vec::new();
    let db = match &database {
        Some(identifier) => {
            let db = aws.rds().discover(identifier).await.map_err(aws_error)?;
            if db.is_none() && explicit {
                problems.push(format!("there is no database {identifier}"));
            }
            db
        }
        None => None,
    };
    if instance.is_none() && db.is_none() && !problems.is_empty() {
        return Err(Error::Problems {
            prefix: stack.prefix.clone(),
            problems,
        }
        .into());
    }
    if instance.is_none() && db.is_none() {
        return Err(nothing(match source {
            Source::Terraform(_) => "the state has neither an aws_instance nor an aws_db_instance",
            Source::Named { .. } => "name the server (--instance) or the database (--database)",
            Source::Tags => "no server named <prefix>-ihp_app and no database <prefix>-postgres-db (pass --from-terraform, or --instance and --database)",
        })
        .into());
    }
    let db_groups = db
        .as_ref()
        .map(|d| d.security_groups.clone())
        .unwrap_or_default();
    let mut net = aws
        .ec2()
        .discover(
            instance.as_deref(),
            db.as_ref().and_then(|d| d.vpc.as_deref()),
            &db_groups,
            &stack.az_1,
            &stack.az_2,
        )
        .await
        .map_err(aws_error)?;
    problems.append(&mut net.problems);
    if stack.instance.is_none() && instance.is_some() {
        problems.push("the stack file leaves the server out (instance: enabled: false), but there is one: remove that line to keep it".into());
    }
    if stack.database.is_none() && db.is_some() {
        problems.push("the stack file leaves the database out (database: enabled: false), but there is one: remove that line to keep it".into());
    }
    if !problems.is_empty() {
        return Err(Error::Problems {
            prefix: stack.prefix.clone(),
            problems,
        }
        .into());
    }
    let mut live = net.live.clone();
    let mut found: Vec<(Found, Target)> = net
        .found
        .iter()
        .map(|f| (f.clone(), Target::Ec2(f.id.clone())))
        .collect();
    if let Some(d) = &db {
        live.db_engine_version = d.engine_version.clone();
        live.db_instance_class = d.instance_class.clone();
        live.db_username = d.username.clone();
        live.db_storage_encrypted = d.storage_encrypted;
        live.db_allocated_storage = d.allocated_storage;
        live.db_subnet_group = d.subnet_group_name.clone();
        found.push((
            d.database.clone(),
            Target::Rds {
                arn: d.database_arn.clone(),
                name: d.database.id.clone(),
            },
        ));
        if let Some((group, arn)) = &d.subnet_group {
            found.push((
                group.clone(),
                Target::Rds {
                    arn: arn.clone(),
                    name: group.id.clone(),
                },
            ));
        }
    }
    // A bucket and log group made by hand under the names the stack file
    // gives them: the stack's from now on.
    let (bucket, group) = tokio::try_join!(
        async {
            aws.s3()
                .adoptable(&stack.storage.bucket)
                .await
                .map_err(aws_error)
        },
        async {
            aws.logs()
                .adoptable(&stack.logs.group)
                .await
                .map_err(aws_error)
        },
    )?;
    if let Some(tags) = bucket {
        let name = stack.storage.bucket.clone();
        found.push((
            Found {
                address: desired::bucket(),
                id: name.clone(),
                tags,
            },
            Target::Bucket(name),
        ));
    }
    if let Some(tags) = group {
        let name = stack.logs.group.clone();
        found.push((
            Found {
                address: desired::log_group(),
                id: name.clone(),
                tags,
            },
            Target::LogGroup(name),
        ));
    }
    for (f, _) in &found {
        if let Some(other) = f.tags.get(STACK_TAG)
            && *other != stack.prefix
        {
            return Err(Error::OtherStack {
                address: f.address.to_string(),
                id: f.id.clone(),
                other: other.clone(),
            }
            .into());
        }
    }

    // The stack file's settings that keep what is live.
    let wanted = adopt::settings(stack, &live);
    let text = std::fs::read_to_string(&stack.path).map_err(|source| Error::Read {
        path: stack.path.clone(),
        source,
    })?;
    let (new_text, applied) = adopt::edit_stack_text(&text, &wanted).map_err(Error::from)?;
    let settings: Vec<Setting> = applied.into_iter().cloned().collect();
    let edited = if settings.is_empty() {
        stack.clone()
    } else {
        crate::stack::parse(&stack.path, &new_text, env).map_err(|problems| {
            Error::Edited(
                problems
                    .iter()
                    .map(|p| format!("line {}: {}: {}", p.line, p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?
    };

    // What records the choices: the image, the password.
    let mut notes = Vec::new();
    let image_tag = match &edited.instance {
        Some(server) if instance.is_some() => Some(
            aws.ec2()
                .choose_image(&server.image, &server.instance_type, &stack.region)
                .await
                .map_err(aws_error)?
                .0,
        ),
        _ => None,
    };
    let mut resets_password = false;
    let mut password_tag = None;
    if let Some(d) = &db {
        let live_hash = d.database.tags.get(password::TAG).cloned();
        let secret = edited.db_password.clone();
        let verified = match live_hash {
            Some(h) => {
                let secret = secret.clone();
                tokio::task::spawn_blocking(move || password::verify(&h, secret.expose()))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        if !verified {
            match state.as_ref().and_then(|s| s.db_password.as_ref()) {
                Some(p) if p.expose() == secret.expose() => {
                    password_tag = Some(
                        tokio::task::spawn_blocking(move || password::hash(secret.expose()))
                            .await
                            .unwrap_or_default(),
                    );
                    notes.push("db_password matches the password in the Terraform state: the database keeps it.".into());
                }
                Some(_) => {
                    resets_password = true;
                    notes.push("db_password is not the password in the Terraform state: apply will make db_password the database's master password (DATABASE_URL follows; the app reconnects with it).".into());
                }
                None => {
                    resets_password = true;
                    notes.push("there is no Terraform state to compare db_password with: apply will make db_password the database's master password (DATABASE_URL follows; the app reconnects with it).".into());
                }
            }
        }
    }

    // What adopt looked for and didn't find: apply makes it.
    let mut expected = vec![
        desired::vpc(),
        desired::internet_gateway(),
        desired::public_subnet(),
        desired::private_subnet(1),
        desired::private_subnet(2),
        desired::public_route_table(),
        desired::app_security_group(),
    ];
    if stack.instance.is_some() {
        expected.push(desired::instance());
    }
    if stack.database.is_some() {
        expected.extend([
            desired::db_security_group(),
            desired::db_subnet_group(),
            desired::database(),
        ]);
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|a| !found.iter().any(|(f, _)| &f.address == *a))
        .map(|a| a.to_string())
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "not found, so apply creates them: {}",
            missing.join(", ")
        ));
    }

    // The tags each resource lacks.
    let mut takeovers = Vec::new();
    let mut targets = Vec::new();
    let mut overlay = BTreeMap::new();
    for (f, target) in found {
        let mut tags = desired::tags(&edited, &f.address.role);
        if f.address.kind == Kind::Instance
            && let Some(choice) = &image_tag
        {
            tags.insert(IMAGE_TAG.to_string(), choice.clone());
        }
        if f.address.kind == Kind::Database
            && let Some(hash) = &password_tag
        {
            tags.insert(password::TAG.to_string(), hash.clone());
        }
        tags.retain(|k, v| f.tags.get(k) != Some(v));
        if tags.is_empty() {
            continue;
        }
        let known_as = state
            .as_ref()
            .and_then(|s| s.address_of(&f.id))
            .map(str::to_string)
            .or_else(|| f.tags.get("Name").map(|n| format!("Name={n}")))
            .unwrap_or_else(|| "untagged".into());
        overlay.insert(f.id.clone(), tags.clone());
        takeovers.push(Takeover {
            address: f.address,
            id: f.id,
            known_as,
            tags,
        });
        targets.push(target);
    }
    if instance.is_some() && !net.found.iter().any(|f| f.address == desired::elastic_ip()) {
        notes.push("the server gets an Elastic IP: its public address changes once, at apply; point DNS records at the new one (`ihp-infra output INSTANCE_IP`).".into());
    }
    if let Some(state) = &state {
        let taken: Vec<&str> = net.found.iter().map(|f| f.id.as_str()).collect();
        let others: Vec<String> = state
            .resources
            .iter()
            .filter(|(address, id)| {
                !taken.contains(&id.as_str())
                    && !matches!(
                        address.split('.').next(),
                        Some("aws_db_instance" | "aws_db_subnet_group")
                    )
            })
            .map(|(address, id)| format!("{address} ({id})"))
            .collect();
        if !others.is_empty() {
            notes.push(format!(
                "left as they are (not part of an ihp-infra stack): {}",
                others.join(", ")
            ));
        }
    }
    aws.overlay.set(overlay);
    let plan = crate::plan_with(aws, &edited, crate::Goal::Converge).await?;
    Ok(Adoption {
        takeovers,
        targets,
        settings,
        stack_text: (new_text != text).then_some(new_text),
        stack: edited,
        notes,
        resets_password,
        plan,
    })
}

fn aws_error(e: impl Into<crate::aws::Error>) -> crate::Error {
    crate::Error::Aws(e.into())
}
