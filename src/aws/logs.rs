//! CloudWatch Logs: the log group the server's journal is shipped to.
//! Found by its name (unique per account and region) and the stack's tag.

use std::collections::BTreeMap;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

use crate::model::{Address, Attrs, Kind, Observed, Value};
use crate::plan::AttrChange;
use crate::stack::STACK_TAG;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {target}: {}", super::ec2::describe(source.as_ref()))]
    Call {
        action: &'static str,
        target: String,
        #[source]
        source: Box<aws_sdk_cloudwatchlogs::Error>,
    },
    #[error(
        "log group {name} exists but is not part of stack {prefix} (it lacks the tag {STACK_TAG}={prefix}); \
         tag it to let ihp-infra manage it, or set logs.group to another name"
    )]
    NotOurs { name: String, prefix: String },
    #[error(transparent)]
    Tagging(#[from] super::tagging::Error),
    #[error("internal error: {kind} is not a CloudWatch Logs resource")]
    NotLogs { kind: Kind },
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call { source, .. } => source.code(),
            Error::Tagging(e) => e.code(),
            _ => None,
        }
    }
}

pub(super) fn call<E, R>(
    action: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(SdkError<E, R>) -> Error
where
    aws_sdk_cloudwatchlogs::Error: From<SdkError<E, R>>,
{
    let target = target.into();
    move |e| Error::Call {
        action,
        target,
        source: Box::new(e.into()),
    }
}

pub struct Logs {
    client: Client,
    tagging: super::tagging::Tagging,
    prefix: String,
    group: String,
    /// The group's ARN without the `:*` suffix, as the tagging calls want it.
    arn: String,
}

impl Logs {
    pub fn new(
        client: Client,
        tagging: super::tagging::Tagging,
        prefix: &str,
        group: &str,
        arn: String,
    ) -> Self {
        Logs {
            client,
            tagging,
            prefix: prefix.to_string(),
            group: group.to_string(),
            arn,
        }
    }

    pub async fn observe(&self) -> Result<Vec<Observed>, Error> {
        // Groups of the stack under another name (logs.group changed).
        let mut observed = self
            .tagging
            // By service, not "logs:log-group": moto calls the type "logs:loggroup".
            .renamed(
                "logs",
                Kind::LogGroup,
                super::tagging::log_group_name,
                &self.group,
            )
            .await?;
        let out = self
            .client
            .describe_log_groups()
            .log_group_name_prefix(&self.group)
            .send()
            .await
            .map_err(call("describe log group", &self.group))?;
        let Some(group) = out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(self.group.as_str()))
        else {
            return Ok(observed);
        };
        let tags: BTreeMap<String, String> = self
            .client
            .list_tags_for_resource()
            .resource_arn(&self.arn)
            .send()
            .await
            .map_err(call("list tags of log group", &self.group))?
            .tags()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if tags.get(STACK_TAG) != Some(&self.prefix) {
            return Err(Error::NotOurs {
                name: self.group.clone(),
                prefix: self.prefix.clone(),
            });
        }
        observed.push(Observed {
            address: Address::new(Kind::LogGroup, "logs"),
            id: self.group.clone(),
            attrs: BTreeMap::from([
                ("name", Value::Text(self.group.clone())),
                (
                    "retention_days",
                    group
                        .retention_in_days()
                        .map(|d| Value::Int(d.into()))
                        .unwrap_or(Value::None),
                ),
            ]),
            tags,
        });
        Ok(observed)
    }

    pub async fn create(
        &self,
        address: &Address,
        tags: &BTreeMap<String, String>,
        attrs: &Attrs,
    ) -> Result<String, Error> {
        if address.kind != Kind::LogGroup {
            return Err(Error::NotLogs { kind: address.kind });
        }
        let created = self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .set_tags(Some(tags.clone().into_iter().collect()))
            .send()
            .await;
        match created {
            // An interrupted run made it (observe checked the tag).
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            other => other
                .map(drop)
                .map_err(call("create log group", &self.group))?,
        }
        if let Some(days) = attrs.int("retention_days") {
            self.set_retention(days).await?;
        }
        Ok(self.group.clone())
    }

    async fn set_retention(&self, days: i64) -> Result<(), Error> {
        self.client
            .put_retention_policy()
            .log_group_name(&self.group)
            .retention_in_days(days as i32)
            .send()
            .await
            .map(drop)
            .map_err(call("set retention of log group", &self.group))
    }

    pub async fn update(&self, changes: &[AttrChange]) -> Result<(), Error> {
        for c in changes {
            match (c.name, &c.after) {
                ("retention_days", Value::Int(days)) => self.set_retention(*days).await?,
                ("tags", _) => {
                    self.client
                        .tag_resource()
                        .resource_arn(&self.arn)
                        .set_tags(Some(c.added_tags().into_iter().collect()))
                        .send()
                        .await
                        .map_err(call("tag log group", &self.group))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub async fn delete(&self, group: &str) -> Result<(), Error> {
        match self
            .client
            .delete_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            other => other.map(drop).map_err(call("delete log group", group)),
        }
    }
}
