//! RDS: the DB subnet group and the Postgres database. Neither is found by
//! the tagging API everywhere (moto's lacks subnet groups), so both are
//! found by their unique names and must carry the stack's tag to count as
//! ours.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_rds::Client;
use aws_sdk_rds::error::ProvideErrorMetadata;
use aws_sdk_rds::primitives::{DateTime, DateTimeFormat};
use aws_sdk_rds::types::{DbInstance, Tag};

use super::service::{CallError, Created, NotOurs, Service, Wanted, ours, required};
use crate::desired;
use crate::model::{Attrs, Item, Kind, Observed, Ref, Value};
use crate::password;
use crate::plan::{AttrChange, Change, DataOnDelete};
use crate::stack::Secret;
use async_trait::async_trait;

/// RDS creates in minutes and deletes (with a snapshot) in longer; the SDK's
/// own waiters stop at 30 minutes, too soon for a big final snapshot.
const CREATE_WAIT: Duration = Duration::from_secs(60 * 60);
const DELETE_WAIT: Duration = Duration::from_secs(120 * 60);
const POLL: Duration = Duration::from_secs(15);

/// What to do about a resource of this name that isn't the stack's.
const REMEDY: &str =
    "ihp-infra will not take it over. Rename or delete it, or choose another prefix";

/// A failed RDS call.
pub type Call = CallError<aws_sdk_rds::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(transparent)]
    NotOurs(#[from] NotOurs),
    #[error("timed out after {minutes} minutes waiting for {what}")]
    Timeout { what: String, minutes: u64 },
    #[error("database {name} ended in status {status} while waiting for it to be {wanted}")]
    Failed {
        name: String,
        status: String,
        wanted: &'static str,
    },
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            _ => None,
        }
    }

    /// LocalStack's community edition answers every RDS call with
    /// InternalFailure "... not included in your current license plan".
    pub fn hint(&self) -> Option<&'static str> {
        let Error::Call(e) = self else {
            return None;
        };
        no_rds(e.code(), e.message()).then_some(
            "this endpoint has no RDS (LocalStack's community edition lacks it); \
             ihp-infra needs RDS for the database: use LocalStack Pro, moto, or AWS",
        )
    }
}

/// Whether an endpoint lacks RDS (see [`super::service::not_emulated`]).
fn no_rds(code: Option<&str>, message: Option<&str>) -> bool {
    super::service::not_emulated(code, message)
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
    /// The master password, sent on create and when its hash changed.
    password: Secret,
    overlay: std::sync::Arc<super::overlay::Overlay>,
}

/// Where the database answers, and as whom to log in.
pub struct Endpoint {
    pub address: String,
    pub port: i32,
    pub username: String,
}

impl Rds {
    pub fn new(
        client: Client,
        prefix: &str,
        password: Secret,
        overlay: std::sync::Arc<super::overlay::Overlay>,
    ) -> Self {
        Rds {
            client,
            prefix: prefix.to_string(),
            password,
            overlay,
        }
    }

    /// What a read's error means: nothing there, when the endpoint has no
    /// RDS and the stack wants no database (LocalStack's community
    /// edition); else the error.
    fn none_without_rds<T>(wanted: bool, result: Result<T, Error>, none: T) -> Result<T, Error> {
        match result {
            Err(Error::Call(e)) if !wanted && no_rds(e.code(), e.message()) => {
                tracing::debug!("this endpoint has no RDS and the stack wants no database");
                Ok(none)
            }
            other => other,
        }
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, Error> {
        let group = wanted.name(&desired::db_subnet_group());
        let identifier = wanted.attr(&desired::database(), "identifier");
        let observed = async {
            let (group, db) = tokio::try_join!(
                async {
                    match group {
                        Some(group) => self.observe_subnet_group(group).await,
                        None => Ok(None),
                    }
                },
                async {
                    match identifier {
                        Some(identifier) => self.observe_database(identifier).await,
                        None => Ok(None),
                    }
                },
            )?;
            Ok(group.into_iter().chain(db).collect())
        }
        .await;
        Self::none_without_rds(wanted.wants(&desired::database()), observed, Vec::new())
    }

    async fn observe_subnet_group(&self, group_name: &str) -> Result<Option<Observed>, Error> {
        let out = self
            .client
            .describe_db_subnet_groups()
            .db_subnet_group_name(group_name)
            .send()
            .await;
        let out = match out {
            Err(e) if e.code() == Some("DBSubnetGroupNotFoundFault") => return Ok(None),
            other => other.map_err(Call::on("describe DB subnet group", group_name))?,
        };
        let Some(group) = out.db_subnet_groups().first() else {
            return Ok(None);
        };
        let arn = group.db_subnet_group_arn().unwrap_or_default();
        let tags = self.overlay.tags(
            group_name,
            tag_map(
                self.client
                    .list_tags_for_resource()
                    .resource_name(arn)
                    .send()
                    .await
                    .map_err(Call::on("list tags of", arn))?
                    .tag_list(),
            ),
        );
        ours(&tags, &self.prefix, "DB subnet group", group_name, REMEDY)?;
        let subnets = group
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_identifier())
            .map(|s| Item::Subnet(Ref::Id(s.to_string())))
            .collect();
        Ok(Some(Observed {
            address: desired::db_subnet_group(),
            id: group_name.to_string(),
            attrs: BTreeMap::from([
                ("name", Value::Text(group_name.to_string())),
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

    async fn describe(&self, identifier: &str) -> Result<Option<DbInstance>, Error> {
        let out = self
            .client
            .describe_db_instances()
            .db_instance_identifier(identifier)
            .send()
            .await;
        match out {
            Err(e) if e.code() == Some("DBInstanceNotFound") => Ok(None),
            other => Ok(other
                .map_err(Call::on("describe database", identifier))?
                .db_instances()
                .first()
                .cloned()),
        }
    }

    async fn observe_database(&self, identifier: &str) -> Result<Option<Observed>, Error> {
        let Some(db) = self.describe(identifier).await? else {
            return Ok(None);
        };
        let tags = self.overlay.tags(identifier, tag_map(db.tag_list()));
        ours(&tags, &self.prefix, "database", identifier, REMEDY)?;
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
            address: desired::database(),
            id: identifier.to_string(),
            attrs: BTreeMap::from([
                ("identifier", Value::Text(identifier.to_string())),
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
                    "backup_retention_days",
                    db.backup_retention_period()
                        .map(|d| Value::Int(d.into()))
                        .unwrap_or(Value::None),
                ),
                (
                    "storage_encrypted",
                    db.storage_encrypted()
                        .map(Value::Bool)
                        .unwrap_or(Value::None),
                ),
                (
                    "deletion_protection",
                    db.deletion_protection()
                        .map(Value::Bool)
                        .unwrap_or(Value::None),
                ),
                (
                    "multi_az",
                    db.multi_az().map(Value::Bool).unwrap_or(Value::None),
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

    /// The endpoint of database `identifier`, once it exists.
    pub async fn endpoint(&self, identifier: &str) -> Result<Option<Endpoint>, Error> {
        Ok(self.describe(identifier).await?.and_then(|db| {
            let endpoint = db.endpoint()?;
            Some(Endpoint {
                address: endpoint.address()?.to_string(),
                port: endpoint.port().unwrap_or(5432),
                username: db.master_username().unwrap_or_default().to_string(),
            })
        }))
    }

    async fn create_subnet_group(
        &self,
        group: &str,
        tags: &BTreeMap<String, String>,
        attrs: &Attrs,
    ) -> Result<(), Error> {
        let result = self
            .client
            .create_db_subnet_group()
            .db_subnet_group_name(group)
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
            Err(e) if e.code() == Some("DBSubnetGroupAlreadyExists") => Ok(()),
            other => {
                other.map_err(Call::on("create DB subnet group", group))?;
                Ok(())
            }
        }
    }

    async fn create_database(
        &self,
        identifier: &str,
        change: &Change,
        attrs: &Attrs,
    ) -> Result<(), super::Error> {
        let text = |name| required(attrs.text(name), change, name);
        let mut tags = change.tags.clone();
        tags.insert(password::TAG.to_string(), text("password")?.to_string());
        let result = self
            .client
            .create_db_instance()
            .db_instance_identifier(identifier)
            .engine(text("engine")?)
            .engine_version(text("engine_version")?)
            .db_instance_class(text("instance_class")?)
            .allocated_storage(required(
                attrs.int("allocated_storage"),
                change,
                "allocated_storage",
            )? as i32)
            .storage_type("gp3")
            .master_username(text("username")?)
            .master_user_password(self.password.expose())
            .db_subnet_group_name(required(attrs.id("subnet_group"), change, "subnet_group")?)
            .set_vpc_security_group_ids(Some(attrs.ids("security_groups")))
            .publicly_accessible(false)
            .backup_retention_period(required(
                attrs.int("backup_retention_days"),
                change,
                "backup_retention_days",
            )? as i32)
            .storage_encrypted(attrs.bool("storage_encrypted").unwrap_or(true))
            .deletion_protection(attrs.bool("deletion_protection").unwrap_or(true))
            .multi_az(attrs.bool("multi_az").unwrap_or(false))
            .set_tags(Some(rds_tags(&tags)))
            .send()
            .await;
        match result {
            Err(e) if e.code() == Some("DBInstanceAlreadyExists") => {}
            other => {
                other
                    .map_err(Call::on("create database", identifier))
                    .map_err(Error::from)?;
            }
        }
        Ok(self.wait_available(identifier, "created").await?)
    }

    async fn update_subnet_group(&self, group: &str, changes: &[AttrChange]) -> Result<(), Error> {
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
                .db_subnet_group_name(group)
                .set_subnet_ids(Some(ids))
                .send()
                .await
                .map_err(Call::on("modify DB subnet group", group))?;
        }
        let tags = added_tags(changes);
        if !tags.is_empty() {
            let arn = self
                .client
                .describe_db_subnet_groups()
                .db_subnet_group_name(group)
                .send()
                .await
                .map_err(Call::on("describe DB subnet group", group))?
                .db_subnet_groups()
                .first()
                .and_then(|g| g.db_subnet_group_arn().map(str::to_string))
                .unwrap_or_default();
            self.tag(&arn, &tags, "tag DB subnet group", group).await?;
        }
        Ok(())
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
            .map_err(Call::on(action, name))?;
        Ok(())
    }

    async fn modify_database(&self, identifier: &str, changes: &[AttrChange]) -> Result<(), Error> {
        let mut modify = self
            .client
            .modify_db_instance()
            .db_instance_identifier(identifier)
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
                ("deletion_protection", Value::Bool(b)) => modify.deletion_protection(*b),
                ("multi_az", Value::Bool(b)) => modify.multi_az(*b),
                ("backup_retention_days", Value::Int(days)) => {
                    modify.backup_retention_period(*days as i32)
                }
                ("password", Value::Sensitive(hash)) => {
                    new_hash = Some(hash.clone());
                    modify.master_user_password(self.password.expose())
                }
                _ => modify,
            };
        }
        if modified {
            self.wait_settled(identifier).await?;
            modify
                .send()
                .await
                .map_err(Call::on("modify database", identifier))?;
        }
        if let Some(hash) = new_hash {
            other_tags.insert(password::TAG.to_string(), hash);
        }
        if !other_tags.is_empty() {
            let arn = self
                .describe(identifier)
                .await?
                .and_then(|db| db.db_instance_arn().map(str::to_string))
                .unwrap_or_default();
            self.tag(&arn, &other_tags, "tag database", identifier)
                .await?;
        }
        if !modified {
            return Ok(());
        }
        // A modify starts asynchronously: wait for it to show, then to finish.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.wait_available(identifier, "modified").await
    }

    async fn delete_subnet_group(&self, group: &str) -> Result<(), Error> {
        let result = self
            .client
            .delete_db_subnet_group()
            .db_subnet_group_name(group)
            .send()
            .await;
        match result {
            Err(e) if e.code() == Some("DBSubnetGroupNotFoundFault") => Ok(()),
            other => {
                other.map_err(Call::on("delete DB subnet group", group))?;
                Ok(())
            }
        }
    }

    /// Deletes the database, with a final snapshot unless `data` says it is
    /// lost; returns what was kept.
    async fn delete_database(
        &self,
        identifier: &str,
        data: Option<DataOnDelete>,
    ) -> Result<Option<String>, Error> {
        // Deleting a database that is still modifying fails: let it settle.
        self.wait_settled(identifier).await?;
        self.lift_deletion_protection(identifier).await?;
        let base = final_snapshot_name(identifier, SystemTime::now());
        let mut snapshot = None;
        for attempt in 1..=10 {
            if data != Some(DataOnDelete::Lost) {
                // A name already taken (a destroy in the same second) gets a suffix.
                snapshot = Some(match attempt {
                    1 => base.clone(),
                    n => format!("{base}-{n}"),
                });
            }
            let mut delete = self
                .client
                .delete_db_instance()
                .db_instance_identifier(identifier)
                .skip_final_snapshot(snapshot.is_none());
            if let Some(name) = &snapshot {
                delete = delete.final_db_snapshot_identifier(name);
            }
            match delete.send().await {
                Err(e) if e.code() == Some("DBInstanceNotFound") => return Ok(None),
                Err(e) if e.code() == Some("DBSnapshotAlreadyExists") && attempt < 10 => {}
                other => {
                    other.map_err(Call::on("delete database", identifier))?;
                    break;
                }
            }
        }
        let started = Instant::now();
        while self.describe(identifier).await?.is_some() {
            if started.elapsed() > DELETE_WAIT {
                return Err(Error::Timeout {
                    what: format!("database {} to be deleted", identifier),
                    minutes: DELETE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(database = %identifier, "waiting for the database to be deleted");
            tokio::time::sleep(POLL).await;
        }
        Ok(snapshot.map(|s| format!("final snapshot {s}")))
    }

    /// Turns deletion protection off: only ever called by a delete the run
    /// was confirmed for (destroy, `enabled: false`, an allowed
    /// replacement), which the plan says lifts it.
    async fn lift_deletion_protection(&self, identifier: &str) -> Result<(), Error> {
        let protected = self
            .describe(identifier)
            .await?
            .and_then(|db| db.deletion_protection())
            == Some(true);
        if !protected {
            return Ok(());
        }
        tracing::info!(database = %identifier, "lifting deletion protection to delete the database");
        self.client
            .modify_db_instance()
            .db_instance_identifier(identifier)
            .deletion_protection(false)
            .apply_immediately(true)
            .send()
            .await
            .map_err(Call::on("lift deletion protection of database", identifier))?;
        self.wait_settled(identifier).await
    }

    /// Waits while the database is busy (creating, modifying, backing up...).
    async fn wait_settled(&self, identifier: &str) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let Some(db) = self.describe(identifier).await? else {
                return Ok(());
            };
            let status = db.db_instance_status().unwrap_or("unknown");
            if !busy(status) {
                return Ok(());
            }
            if started.elapsed() > CREATE_WAIT {
                return Err(Error::Timeout {
                    what: format!("database {} to finish {status}", identifier),
                    minutes: CREATE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(database = %identifier, status, "waiting for the database to settle");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_available(&self, identifier: &str, wanted: &'static str) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let status = self
                .describe(identifier)
                .await?
                .and_then(|db| db.db_instance_status().map(str::to_string))
                .unwrap_or_else(|| "not visible yet".to_string());
            if status == "available" {
                return Ok(());
            }
            if hopeless(&status) {
                return Err(Error::Failed {
                    name: identifier.to_string(),
                    status,
                    wanted,
                });
            }
            if started.elapsed() > CREATE_WAIT {
                return Err(Error::Timeout {
                    what: format!("database {} to be available (status {status})", identifier),
                    minutes: CREATE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(database = %identifier, status, "waiting for the database to be available");
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Service for Rds {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::DbSubnetGroup, Kind::Database]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        Ok(self.observe(wanted).await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        Ok(match change.address.kind {
            Kind::DbSubnetGroup => {
                let group = required(attrs.text("name"), change, "name")?;
                self.create_subnet_group(group, &change.tags, attrs).await?;
                Created::id(group)
            }
            Kind::Database => {
                let identifier = required(attrs.text("identifier"), change, "identifier")?;
                self.create_database(identifier, change, attrs).await?;
                Created::id(identifier)
            }
            kind => return Err(super::Error::Unrouted { kind }),
        })
    }

    async fn update(
        &self,
        change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        match change.address.kind {
            Kind::DbSubnetGroup => self.update_subnet_group(id, attrs).await?,
            Kind::Database => self.modify_database(id, attrs).await?,
            kind => return Err(super::Error::Unrouted { kind }),
        }
        Ok(())
    }

    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        Ok(match change.address.kind {
            Kind::DbSubnetGroup => {
                self.delete_subnet_group(id).await?;
                None
            }
            Kind::Database => self.delete_database(id, change.data_on_delete).await?,
            kind => return Err(super::Error::Unrouted { kind }),
        })
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

/// What `adopt` finds of a database: it, its subnet group and VPC.
#[derive(Debug)]
pub struct AdoptedDatabase {
    pub database: crate::aws::ec2::adopt::Found,
    pub database_arn: String,
    /// The subnet group, and its ARN (for tagging).
    pub subnet_group: Option<(crate::aws::ec2::adopt::Found, String)>,
    pub vpc: Option<String>,
    pub security_groups: Vec<String>,
    pub engine_version: Option<String>,
    pub instance_class: Option<String>,
    pub username: Option<String>,
    pub storage_encrypted: Option<bool>,
    pub allocated_storage: Option<i32>,
    pub subnet_group_name: Option<String>,
}

impl Rds {
    /// The database `identifier` and its subnet group, as adopt finds them.
    pub async fn discover(&self, identifier: &str) -> Result<Option<AdoptedDatabase>, Error> {
        use crate::aws::ec2::adopt::Found;
        let Some(db) = self.describe(identifier).await? else {
            return Ok(None);
        };
        let group_name = db
            .db_subnet_group()
            .and_then(|g| g.db_subnet_group_name())
            .map(str::to_string);
        let subnet_group = match &group_name {
            Some(name) => {
                let out = self
                    .client
                    .describe_db_subnet_groups()
                    .db_subnet_group_name(name)
                    .send()
                    .await
                    .map_err(Call::on("describe DB subnet group", name))?;
                match out.db_subnet_groups().first() {
                    Some(g) => {
                        let arn = g.db_subnet_group_arn().unwrap_or_default().to_string();
                        let tags = tag_map(
                            self.client
                                .list_tags_for_resource()
                                .resource_name(&arn)
                                .send()
                                .await
                                .map_err(Call::on("list tags of", &arn))?
                                .tag_list(),
                        );
                        Some((
                            Found {
                                address: desired::db_subnet_group(),
                                id: name.clone(),
                                tags,
                            },
                            arn,
                        ))
                    }
                    None => None,
                }
            }
            None => None,
        };
        Ok(Some(AdoptedDatabase {
            database: Found {
                address: desired::database(),
                id: identifier.to_string(),
                tags: tag_map(db.tag_list()),
            },
            database_arn: db.db_instance_arn().unwrap_or_default().to_string(),
            vpc: db
                .db_subnet_group()
                .and_then(|g| g.vpc_id())
                .map(str::to_string),
            subnet_group,
            security_groups: db
                .vpc_security_groups()
                .iter()
                .filter_map(|g| g.vpc_security_group_id())
                .map(str::to_string)
                .collect(),
            engine_version: db.engine_version().map(str::to_string),
            instance_class: db.db_instance_class().map(str::to_string),
            username: db.master_username().map(str::to_string),
            storage_encrypted: db.storage_encrypted(),
            allocated_storage: db.allocated_storage(),
            subnet_group_name: group_name,
        }))
    }

    /// Adds `tags` to the RDS resource `arn` (`what` names it in errors).
    pub async fn add_tags(
        &self,
        arn: &str,
        tags: &BTreeMap<String, String>,
        what: &str,
    ) -> Result<(), Error> {
        self.tag(arn, tags, "tag", what).await
    }
}
