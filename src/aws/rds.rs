//! RDS: the DB subnet group and the Postgres database. Neither is found by
//! the tagging API everywhere (moto's lacks subnet groups), so both are
//! found by their unique names and must carry the stack's tag to count as
//! ours.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_rds::Client;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::primitives::{DateTime, DateTimeFormat};
use aws_sdk_rds::types::{DbInstance, Tag};

use crate::model::{Address, Attrs, Item, Kind, Observed, Ref, Value};
use crate::password;
use crate::plan::AttrChange;
use crate::stack::{STACK_TAG, Secret};

/// RDS creates in minutes and deletes (with a snapshot) in longer; the SDK's
/// own waiters stop at 30 minutes, too soon for a big final snapshot.
const CREATE_WAIT: Duration = Duration::from_secs(60 * 60);
const DELETE_WAIT: Duration = Duration::from_secs(120 * 60);
const POLL: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {target}: {}", super::ec2::describe(source.as_ref()))]
    Call {
        action: &'static str,
        target: String,
        #[source]
        source: Box<aws_sdk_rds::Error>,
    },
    #[error(
        "{what} {name} exists but is not part of stack {prefix} (it lacks the tag {STACK_TAG}={prefix}); \
         ihp-infra will not take it over. Rename or delete it, or choose another prefix"
    )]
    NotOurs {
        what: &'static str,
        name: String,
        prefix: String,
    },
    #[error("timed out after {minutes} minutes waiting for {what}")]
    Timeout { what: String, minutes: u64 },
    #[error("database {name} ended in status {status} while waiting for it to be {wanted}")]
    Failed {
        name: String,
        status: String,
        wanted: &'static str,
    },
    #[error("internal error: {kind} is not an RDS resource")]
    NotRds { kind: Kind },
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call { source, .. } => source.code(),
            _ => None,
        }
    }

    /// LocalStack's community edition answers every RDS call with
    /// InternalFailure "... not included in your current license plan".
    pub fn hint(&self) -> Option<&'static str> {
        let Error::Call { source, .. } = self else {
            return None;
        };
        no_rds(source.code(), source.message()).then_some(
            "this endpoint has no RDS (LocalStack's community edition lacks it); \
             ihp-infra needs RDS for the database: use LocalStack Pro, moto, or AWS",
        )
    }
}

fn no_rds(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("InternalFailure")
        && message.is_some_and(|m| m.contains("not included in your current license plan"))
}

fn call<E, R>(
    action: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(SdkError<E, R>) -> Error
where
    aws_sdk_rds::Error: From<SdkError<E, R>>,
{
    let target = target.into();
    move |e| Error::Call {
        action,
        target,
        source: Box::new(e.into()),
    }
}

/// The tags the changes set.
fn added_tags(changes: &[AttrChange]) -> BTreeMap<String, String> {
    changes
        .iter()
        .filter(|c| c.name == "tags")
        .flat_map(AttrChange::added_tags)
        .collect()
}

fn rds_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// A final snapshot name that no earlier destroy used.
pub fn final_snapshot_name(identifier: &str, now: SystemTime) -> String {
    let stamp: String = DateTime::from(now)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    format!("{identifier}-final-{stamp}")
}

/// Statuses in which a delete is refused until the database settles.
fn busy(status: &str) -> bool {
    matches!(
        status,
        "creating"
            | "modifying"
            | "backing-up"
            | "upgrading"
            | "rebooting"
            | "resetting-master-credentials"
            | "configuring-enhanced-monitoring"
            | "configuring-log-exports"
            | "renaming"
            | "starting"
            | "stopping"
            | "maintenance"
            | "storage-optimization"
            | "moving-to-vpc"
    )
}

/// Statuses from which waiting for "available" can't succeed.
fn hopeless(status: &str) -> bool {
    matches!(
        status,
        "failed"
            | "incompatible-parameters"
            | "incompatible-network"
            | "incompatible-restore"
            | "restore-error"
            | "storage-full"
            | "deleting"
    )
}

pub struct Rds {
    client: Client,
    prefix: String,
    subnet_group: String,
    identifier: String,
    password: Secret,
    skip_final_snapshot: bool,
    /// The stack wants a database. When it doesn't, an endpoint without RDS
    /// (LocalStack's community edition) simply holds none.
    wanted: bool,
}

impl Rds {
    pub fn new(
        client: Client,
        prefix: &str,
        subnet_group: String,
        identifier: String,
        password: Secret,
    ) -> Self {
        Rds {
            client,
            prefix: prefix.to_string(),
            subnet_group,
            identifier,
            password,
            skip_final_snapshot: false,
            wanted: true,
        }
    }

    /// Whether the stack wants a database (see `wanted`).
    pub fn wanted(&mut self, wanted: bool) {
        self.wanted = wanted;
    }

    /// What a read's error means: nothing there, when the endpoint has no
    /// RDS and the stack wants no database; else the error.
    fn none_without_rds<T>(&self, result: Result<T, Error>, none: T) -> Result<T, Error> {
        match result {
            Err(Error::Call { source, .. })
                if !self.wanted && no_rds(source.code(), source.message()) =>
            {
                tracing::debug!("this endpoint has no RDS and the stack wants no database");
                Ok(none)
            }
            other => other,
        }
    }

    pub fn skip_final_snapshot(&mut self, skip: bool) {
        self.skip_final_snapshot = skip;
    }

    fn ours(
        &self,
        tags: &BTreeMap<String, String>,
        what: &'static str,
        name: &str,
    ) -> Result<(), Error> {
        if tags.get(STACK_TAG) == Some(&self.prefix) {
            Ok(())
        } else {
            Err(Error::NotOurs {
                what,
                name: name.to_string(),
                prefix: self.prefix.clone(),
            })
        }
    }

    pub async fn observe(&self) -> Result<Vec<Observed>, Error> {
        let observed = async {
            let (group, db) =
                tokio::try_join!(self.observe_subnet_group(), self.observe_database())?;
            Ok(group.into_iter().chain(db).collect())
        }
        .await;
        self.none_without_rds(observed, Vec::new())
    }

    async fn observe_subnet_group(&self) -> Result<Option<Observed>, Error> {
        let out = self
            .client
            .describe_db_subnet_groups()
            .db_subnet_group_name(&self.subnet_group)
            .send()
            .await;
        let out = match out {
            Err(e) if e.code() == Some("DBSubnetGroupNotFoundFault") => return Ok(None),
            other => other.map_err(call("describe DB subnet group", &self.subnet_group))?,
        };
        let Some(group) = out.db_subnet_groups().first() else {
            return Ok(None);
        };
        let arn = group.db_subnet_group_arn().unwrap_or_default();
        let tags = tag_map(
            self.client
                .list_tags_for_resource()
                .resource_name(arn)
                .send()
                .await
                .map_err(call("list tags of", arn))?
                .tag_list(),
        );
        self.ours(&tags, "DB subnet group", &self.subnet_group)?;
        let subnets = group
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_identifier())
            .map(|s| Item::Subnet(Ref::Id(s.to_string())))
            .collect();
        Ok(Some(Observed {
            address: Address::new(Kind::DbSubnetGroup, "db-subnets"),
            id: self.subnet_group.clone(),
            attrs: BTreeMap::from([
                ("name", Value::Text(self.subnet_group.clone())),
                (
                    "vpc",
                    group
                        .vpc_id()
                        .map(|v| Value::Ref(Ref::Id(v.to_string())))
                        .unwrap_or(Value::None),
                ),
                ("subnets", Value::Set(subnets)),
            ]),
            tags,
        }))
    }

    async fn describe(&self) -> Result<Option<DbInstance>, Error> {
        let out = self
            .client
            .describe_db_instances()
            .db_instance_identifier(&self.identifier)
            .send()
            .await;
        match out {
            Err(e) if e.code() == Some("DBInstanceNotFound") => Ok(None),
            other => Ok(other
                .map_err(call("describe database", &self.identifier))?
                .db_instances()
                .first()
                .cloned()),
        }
    }

    async fn observe_database(&self) -> Result<Option<Observed>, Error> {
        let Some(db) = self.describe().await? else {
            return Ok(None);
        };
        let tags = tag_map(db.tag_list());
        self.ours(&tags, "database", &self.identifier)?;
        if db.db_instance_status() == Some("deleting") {
            // Going away; a create has to wait until it is gone.
            return Ok(None);
        }
        let text = |v: Option<&str>| v.map(|s| Value::Text(s.to_string())).unwrap_or(Value::None);
        let groups = db
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(|g| Item::Group(Ref::Id(g.to_string())))
            .collect();
        Ok(Some(Observed {
            address: Address::new(Kind::Database, "postgres-db"),
            id: self.identifier.clone(),
            attrs: BTreeMap::from([
                ("identifier", Value::Text(self.identifier.clone())),
                ("engine", text(db.engine())),
                ("engine_version", text(db.engine_version())),
                ("instance_class", text(db.db_instance_class())),
                (
                    "allocated_storage",
                    db.allocated_storage()
                        .map(|s| Value::Int(s.into()))
                        .unwrap_or(Value::None),
                ),
                ("username", text(db.master_username())),
                (
                    "subnet_group",
                    db.db_subnet_group()
                        .and_then(|g| g.db_subnet_group_name())
                        .map(|g| Value::Ref(Ref::Id(g.to_string())))
                        .unwrap_or(Value::None),
                ),
                ("security_groups", Value::Set(groups)),
                (
                    "publicly_accessible",
                    db.publicly_accessible()
                        .map(Value::Bool)
                        .unwrap_or(Value::None),
                ),
                (
                    "storage_encrypted",
                    db.storage_encrypted()
                        .map(Value::Bool)
                        .unwrap_or(Value::None),
                ),
                (
                    "password",
                    tags.get(password::TAG)
                        .map(|h| Value::Sensitive(h.clone()))
                        .unwrap_or(Value::None),
                ),
            ]),
            tags,
        }))
    }

    /// The endpoint address and master user name, once the database exists.
    /// Where the database answers, and as whom to log in.
    pub async fn endpoint(&self) -> Result<Option<crate::outputs::Database>, Error> {
        Ok(self.describe().await?.and_then(|db| {
            let endpoint = db.endpoint()?;
            Some(crate::outputs::Database {
                endpoint: endpoint.address()?.to_string(),
                port: endpoint.port().unwrap_or(5432),
                username: db.master_username().unwrap_or_default().to_string(),
            })
        }))
    }

    pub async fn create(
        &self,
        address: &Address,
        tags: &BTreeMap<String, String>,
        attrs: &Attrs,
    ) -> Result<String, Error> {
        match address.kind {
            Kind::DbSubnetGroup => {
                let result = self
                    .client
                    .create_db_subnet_group()
                    .db_subnet_group_name(&self.subnet_group)
                    .db_subnet_group_description(format!(
                        "ihp-infra: private subnets of stack {}",
                        self.prefix
                    ))
                    .set_subnet_ids(Some(attrs.ids("subnets")))
                    .set_tags(Some(rds_tags(tags)))
                    .send()
                    .await;
                match result {
                    // Made by an interrupted run (observe refuses one that isn't ours).
                    Err(e) if e.code() == Some("DBSubnetGroupAlreadyExists") => {}
                    other => other
                        .map(drop)
                        .map_err(call("create DB subnet group", &self.subnet_group))?,
                }
                Ok(self.subnet_group.clone())
            }
            Kind::Database => {
                let mut tags = tags.clone();
                tags.insert(
                    password::TAG.to_string(),
                    attrs.text("password").unwrap_or_default().to_string(),
                );
                let result = self
                    .client
                    .create_db_instance()
                    .db_instance_identifier(&self.identifier)
                    .engine("postgres")
                    .engine_version(attrs.text("engine_version").unwrap_or("16"))
                    .db_instance_class(attrs.text("instance_class").unwrap_or("db.t3.micro"))
                    .allocated_storage(attrs.int("allocated_storage").unwrap_or(20) as i32)
                    .storage_type("gp3")
                    .master_username(attrs.text("username").unwrap_or("postgres_user"))
                    .master_user_password(self.password.expose())
                    .db_subnet_group_name(&self.subnet_group)
                    .set_vpc_security_group_ids(Some(attrs.ids("security_groups")))
                    .publicly_accessible(false)
                    .storage_encrypted(true)
                    .set_tags(Some(rds_tags(&tags)))
                    .send()
                    .await;
                match result {
                    Err(e) if e.code() == Some("DBInstanceAlreadyExists") => {}
                    other => other
                        .map(drop)
                        .map_err(call("create database", &self.identifier))?,
                }
                self.wait_available("created").await?;
                Ok(self.identifier.clone())
            }
            kind => Err(Error::NotRds { kind }),
        }
    }

    pub async fn update(&self, address: &Address, changes: &[AttrChange]) -> Result<(), Error> {
        match address.kind {
            Kind::DbSubnetGroup => {
                if let Some(Value::Set(subnets)) = changes
                    .iter()
                    .find(|c| c.name == "subnets")
                    .map(|c| &c.after)
                {
                    let ids = subnets
                        .iter()
                        .filter_map(Item::id)
                        .map(str::to_string)
                        .collect();
                    self.client
                        .modify_db_subnet_group()
                        .db_subnet_group_name(&self.subnet_group)
                        .set_subnet_ids(Some(ids))
                        .send()
                        .await
                        .map_err(call("modify DB subnet group", &self.subnet_group))?;
                }
                let tags = added_tags(changes);
                if !tags.is_empty() {
                    let arn = self
                        .client
                        .describe_db_subnet_groups()
                        .db_subnet_group_name(&self.subnet_group)
                        .send()
                        .await
                        .map_err(call("describe DB subnet group", &self.subnet_group))?
                        .db_subnet_groups()
                        .first()
                        .and_then(|g| g.db_subnet_group_arn().map(str::to_string))
                        .unwrap_or_default();
                    self.tag(&arn, &tags, "tag DB subnet group", &self.subnet_group)
                        .await?;
                }
                Ok(())
            }
            Kind::Database => self.modify_database(changes).await,
            kind => Err(Error::NotRds { kind }),
        }
    }

    async fn tag(
        &self,
        arn: &str,
        tags: &BTreeMap<String, String>,
        action: &'static str,
        name: &str,
    ) -> Result<(), Error> {
        self.client
            .add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(rds_tags(tags)))
            .send()
            .await
            .map(drop)
            .map_err(call(action, name))
    }

    async fn modify_database(&self, changes: &[AttrChange]) -> Result<(), Error> {
        let mut modify = self
            .client
            .modify_db_instance()
            .db_instance_identifier(&self.identifier)
            .apply_immediately(true);
        let mut new_hash = None;
        let mut other_tags = added_tags(changes);
        // Tags alone are no modification: RDS is not asked, nor waited for.
        let modified = changes.iter().any(|c| c.name != "tags");
        for c in changes {
            modify = match (c.name, &c.after) {
                ("instance_class", Value::Text(class)) => modify.db_instance_class(class),
                ("allocated_storage", Value::Int(gb)) => modify.allocated_storage(*gb as i32),
                ("engine_version", Value::AtLeastVersion(v)) => {
                    let major = |v: &str| v.split('.').next().map(str::to_string);
                    let live = match &c.before {
                        Some(Value::Text(l)) => major(l),
                        _ => None,
                    };
                    modify
                        .engine_version(v)
                        .allow_major_version_upgrade(live != major(v))
                }
                ("security_groups", Value::Set(groups)) => modify.set_vpc_security_group_ids(Some(
                    groups
                        .iter()
                        .filter_map(Item::id)
                        .map(str::to_string)
                        .collect(),
                )),
                ("publicly_accessible", Value::Bool(b)) => modify.publicly_accessible(*b),
                ("password", Value::Sensitive(hash)) => {
                    new_hash = Some(hash.clone());
                    modify.master_user_password(self.password.expose())
                }
                _ => modify,
            };
        }
        if modified {
            self.wait_settled().await?;
            modify
                .send()
                .await
                .map_err(call("modify database", &self.identifier))?;
        }
        if let Some(hash) = new_hash {
            other_tags.insert(password::TAG.to_string(), hash);
        }
        if !other_tags.is_empty() {
            let arn = self
                .describe()
                .await?
                .and_then(|db| db.db_instance_arn().map(str::to_string))
                .unwrap_or_default();
            self.tag(&arn, &other_tags, "tag database", &self.identifier)
                .await?;
        }
        if !modified {
            return Ok(());
        }
        // A modify starts asynchronously: wait for it to show, then to finish.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.wait_available("modified").await
    }

    /// Deletes; for the database, returns the final snapshot's name.
    pub async fn delete(&self, address: &Address) -> Result<Option<String>, Error> {
        match address.kind {
            Kind::DbSubnetGroup => {
                let result = self
                    .client
                    .delete_db_subnet_group()
                    .db_subnet_group_name(&self.subnet_group)
                    .send()
                    .await;
                match result {
                    Err(e) if e.code() == Some("DBSubnetGroupNotFoundFault") => Ok(None),
                    other => other
                        .map(|_| None)
                        .map_err(call("delete DB subnet group", &self.subnet_group)),
                }
            }
            Kind::Database => self.delete_database().await,
            kind => Err(Error::NotRds { kind }),
        }
    }

    async fn delete_database(&self) -> Result<Option<String>, Error> {
        // Deleting a database that is still modifying fails: let it settle.
        self.wait_settled().await?;
        let base = final_snapshot_name(&self.identifier, SystemTime::now());
        let mut snapshot = None;
        for attempt in 1..=10 {
            if !self.skip_final_snapshot {
                // A name already taken (a destroy in the same second) gets a suffix.
                snapshot = Some(match attempt {
                    1 => base.clone(),
                    n => format!("{base}-{n}"),
                });
            }
            let mut delete = self
                .client
                .delete_db_instance()
                .db_instance_identifier(&self.identifier)
                .skip_final_snapshot(snapshot.is_none());
            if let Some(name) = &snapshot {
                delete = delete.final_db_snapshot_identifier(name);
            }
            match delete.send().await {
                Err(e) if e.code() == Some("DBInstanceNotFound") => return Ok(None),
                Err(e) if e.code() == Some("DBSnapshotAlreadyExists") && attempt < 10 => {}
                other => {
                    other
                        .map(drop)
                        .map_err(call("delete database", &self.identifier))?;
                    break;
                }
            }
        }
        let started = Instant::now();
        while self.describe().await?.is_some() {
            if started.elapsed() > DELETE_WAIT {
                return Err(Error::Timeout {
                    what: format!("database {} to be deleted", self.identifier),
                    minutes: DELETE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(database = %self.identifier, "waiting for the database to be deleted");
            tokio::time::sleep(POLL).await;
        }
        Ok(snapshot.map(|s| format!("final snapshot {s}")))
    }

    /// Waits while the database is busy (creating, modifying, backing up...).
    async fn wait_settled(&self) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let Some(db) = self.describe().await? else {
                return Ok(());
            };
            let status = db.db_instance_status().unwrap_or("unknown");
            if !busy(status) {
                return Ok(());
            }
            if started.elapsed() > CREATE_WAIT {
                return Err(Error::Timeout {
                    what: format!("database {} to finish {status}", self.identifier),
                    minutes: CREATE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(database = %self.identifier, status, "waiting for the database to settle");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_available(&self, wanted: &'static str) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let status = self
                .describe()
                .await?
                .and_then(|db| db.db_instance_status().map(str::to_string))
                .unwrap_or_else(|| "not visible yet".to_string());
            if status == "available" {
                return Ok(());
            }
            if hopeless(&status) {
                return Err(Error::Failed {
                    name: self.identifier.clone(),
                    status,
                    wanted,
                });
            }
            if started.elapsed() > CREATE_WAIT {
                return Err(Error::Timeout {
                    what: format!(
                        "database {} to be available (status {status})",
                        self.identifier
                    ),
                    minutes: CREATE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(database = %self.identifier, status, "waiting for the database to be available");
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localstack_community_without_rds_is_named() {
        let message = "The API for service rds is either not included in your current license plan or has not yet been emulated by LocalStack.";
        assert!(no_rds(Some("InternalFailure"), Some(message)));
        assert!(!no_rds(Some("InternalFailure"), Some("boom")));
        assert!(!no_rds(Some("DBInstanceNotFound"), Some(message)));
    }

    #[test]
    fn final_snapshot_names_are_valid_and_unique_per_second() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let name = final_snapshot_name("demo-postgres-db", t);
        assert_eq!(name, "demo-postgres-db-final-20261118110640");
        assert_ne!(
            name,
            final_snapshot_name("demo-postgres-db", t + Duration::from_secs(1))
        );
        assert!(name.len() <= 255 && !name.contains("--") && !name.ends_with('-'));
    }

    #[test]
    fn statuses_that_block_a_delete() {
        // moto is available at once, so the status sequence is checked here.
        for s in ["creating", "modifying", "backing-up", "upgrading"] {
            assert!(busy(s), "{s}");
        }
        for s in ["available", "stopped", "failed"] {
            assert!(!busy(s), "{s}");
        }
        assert!(hopeless("failed") && hopeless("incompatible-parameters"));
        assert!(!hopeless("creating") && !hopeless("modifying"));
    }
}
