//! CloudWatch Logs: the log group the server's journal is shipped to.
//! Found by its name (unique per account and region) and the stack's tag.

use std::collections::BTreeMap;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::LogGroup;

use super::service::{CallError, Created, NotOurs, Service, Wanted, ours, required};
use crate::desired;
use crate::model::{Attrs, Kind, Observed, Value};
use crate::plan::{AttrChange, Change};
use crate::policies::Arns;
use async_trait::async_trait;

/// A failed CloudWatch Logs call.
pub type Call = CallError<aws_sdk_cloudwatchlogs::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(transparent)]
    NotOurs(#[from] NotOurs),
    #[error(transparent)]
    Tagging(#[from] super::tagging::Error),
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            Error::Tagging(e) => e.code(),
            Error::NotOurs(_) => None,
        }
    }
}

pub struct Logs {
    client: Client,
    tagging: super::tagging::Tagging,
    prefix: String,
    arns: Arns,
    overlay: std::sync::Arc<super::overlay::Overlay>,
}

impl Logs {
    pub fn new(
        client: Client,
        tagging: super::tagging::Tagging,
        prefix: &str,
        arns: Arns,
        overlay: std::sync::Arc<super::overlay::Overlay>,
    ) -> Self {
        Logs {
            client,
            tagging,
            prefix: prefix.to_string(),
            arns,
            overlay,
        }
    }

    /// The log group's tags, when it exists (for `adopt`).
    pub async fn adoptable(&self, group: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
        if self.describe(group).await?.is_none() {
            return Ok(None);
        }
        self.live_tags(group).await.map(Some)
    }

    /// The log group named exactly `group`, if there is one.
    async fn describe(&self, group: &str) -> Result<Option<LogGroup>, Error> {
        let out = self
            .client
            .describe_log_groups()
            .log_group_name_prefix(group)
            .send()
            .await
            .map_err(Call::on("describe log group", group))?;
        Ok(out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(group))
            .cloned())
    }

    async fn live_tags(&self, group: &str) -> Result<BTreeMap<String, String>, Error> {
        Ok(self
            .client
            .list_tags_for_resource()
            .resource_arn(self.arns.log_group(group))
            .send()
            .await
            .map_err(Call::on("list tags of log group", group))?
            .tags()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    /// Adds `tags` to the log group's.
    pub async fn add_tags(
        &self,
        group: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        self.client
            .tag_resource()
            .resource_arn(self.arns.log_group(group))
            .set_tags(Some(tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(Call::on("tag log group", group))?;
        Ok(())
    }

    async fn observe(&self, group: &str) -> Result<Vec<Observed>, Error> {
        // Groups of the stack under another name (logs.group changed).
        let mut observed = self
            .tagging
            // By service, not "logs:log-group": moto calls the type "logs:loggroup".
            .renamed(
                "logs",
                Kind::LogGroup,
                super::tagging::log_group_name,
                &[group],
            )
            .await?;
        let Some(live) = self.describe(group).await? else {
            return Ok(observed);
        };
        let tags = self.overlay.tags(group, self.live_tags(group).await?);
        ours(
            &tags,
            &self.prefix,
            "log group",
            group,
            "tag it to let ihp-infra manage it, or set logs.group to another name",
        )?;
        observed.push(Observed {
            address: desired::log_group(),
            id: group.to_string(),
            attrs: BTreeMap::from([
                ("name", Value::Text(group.to_string())),
                (
                    "retention_days",
                    live.retention_in_days()
                        .map(|d| Value::Int(d.into()))
                        .unwrap_or(Value::None),
                ),
            ]),
            tags,
        });
        Ok(observed)
    }

    async fn create(&self, group: &str, change: &Change, attrs: &Attrs) -> Result<(), Error> {
        let created = self
            .client
            .create_log_group()
            .log_group_name(group)
            .set_tags(Some(change.tags.clone().into_iter().collect()))
            .send()
            .await;
        match created {
            // An interrupted run made it (observe checked the tag).
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            other => other
                .map(drop)
                .map_err(Call::on("create log group", group))?,
        }
        if let Some(days) = attrs.int("retention_days") {
            self.set_retention(group, days).await?;
        }
        Ok(())
    }

    async fn set_retention(&self, group: &str, days: i64) -> Result<(), Error> {
        self.client
            .put_retention_policy()
            .log_group_name(group)
            .retention_in_days(days as i32)
            .send()
            .await
            .map_err(Call::on("set retention of log group", group))?;
        Ok(())
    }

    async fn update(&self, group: &str, changes: &[AttrChange]) -> Result<(), Error> {
        for c in changes {
            match (c.name, &c.after) {
                ("retention_days", Value::Int(days)) => self.set_retention(group, *days).await?,
                ("tags", _) => {
                    self.client
                        .tag_resource()
                        .resource_arn(self.arns.log_group(group))
                        .set_tags(Some(c.added_tags().into_iter().collect()))
                        .send()
                        .await
                        .map_err(Call::on("tag log group", group))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn delete(&self, group: &str) -> Result<(), Error> {
        match self
            .client
            .delete_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| Call::on("delete log group", group)(e).into()),
        }
    }
}

#[async_trait]
impl Service for Logs {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::LogGroup]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        match wanted.name(&desired::log_group()) {
            Some(group) => Ok(self.observe(group).await?),
            None => Ok(Vec::new()),
        }
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        let group = required(attrs.text("name"), change, "name")?;
        self.create(group, change, attrs).await?;
        Ok(Created::id(group))
    }

    async fn update(
        &self,
        _change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        Ok(self.update(id, attrs).await?)
    }

    async fn delete(&self, _change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        self.delete(id).await?;
        Ok(None)
    }
}
