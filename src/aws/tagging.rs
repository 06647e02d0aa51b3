//! The Resource Groups Tagging API: finds every resource of a type that
//! carries the stack's tag, so a bucket or log group the stack file no
//! longer names (it was renamed) is found and cleaned up, not orphaned.

use aws_sdk_resourcegroupstagging::Client;
use aws_sdk_resourcegroupstagging::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_resourcegroupstagging::types::TagFilter;

use std::collections::BTreeMap;

use crate::model::{Address, Kind, Observed, Value};
use crate::stack::STACK_TAG;

#[derive(Debug, thiserror::Error)]
#[error("failed to find resources tagged for stack {prefix}: {}", super::service::describe(source.as_ref()))]
pub struct Error {
    prefix: String,
    #[source]
    source: Box<aws_sdk_resourcegroupstagging::Error>,
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        self.source.code()
    }
}

#[derive(Clone)]
pub struct Tagging {
    client: Client,
    prefix: String,
}

impl Tagging {
    pub fn new(client: Client, prefix: &str) -> Self {
        Tagging {
            client,
            prefix: prefix.to_string(),
        }
    }

    /// ARNs and tags of the resources of `resource_type` (e.g.
    /// "s3:bucket", or a whole service: "logs") tagged for the stack.
    pub async fn resources(
        &self,
        resource_type: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, Error> {
        let failed = |e: SdkError<_, _>| Error {
            prefix: self.prefix.clone(),
            source: Box::new(e.into()),
        };
        let pages: Vec<_> = self
            .client
            .get_resources()
            .tag_filters(
                TagFilter::builder()
                    .key(STACK_TAG)
                    .values(&self.prefix)
                    .build(),
            )
            .resource_type_filters(resource_type)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(failed)?;
        Ok(pages
            .iter()
            .flat_map(|p| p.resource_tag_mapping_list())
            .filter_map(|m| {
                let tags = m
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect();
                Some((m.resource_arn()?.to_string(), tags))
            })
            .collect())
    }
}

impl Tagging {
    /// The stack's resources of `resource_type` under names other than
    /// `current` (the stack file renamed them): found by their tag, to be
    /// cleaned up. `name_of` reads the name from an ARN.
    pub async fn renamed(
        &self,
        resource_type: &str,
        kind: Kind,
        name_of: fn(&str) -> Option<&str>,
        current: &[&str],
    ) -> Result<Vec<Observed>, Error> {
        Ok(self
            .resources(resource_type)
            .await?
            .iter()
            .filter_map(|(arn, tags)| Some((name_of(arn)?, tags)))
            .filter(|(name, _)| !current.contains(name))
            .map(|(name, tags)| {
                let mut tags = tags.clone();
                tags.insert(STACK_TAG.to_string(), self.prefix.clone());
                Observed {
                    address: Address::new(kind, name),
                    id: name.to_string(),
                    attrs: BTreeMap::from([("name", Value::Text(name.to_string()))]),
                    tags,
                }
            })
            .collect())
    }
}

/// The bucket name in `arn:aws:s3:::name`.
pub fn bucket_name(arn: &str) -> Option<&str> {
    arn.split(":::").nth(1)
}

/// The group name in `arn:aws:logs:region:account:log-group:name[:*]`.
pub fn log_group_name(arn: &str) -> Option<&str> {
    let name = arn.split_once(":log-group:")?.1;
    Some(name.strip_suffix(":*").unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_arns() {
        assert_eq!(
            bucket_name("arn:aws:s3:::demo-storage"),
            Some("demo-storage")
        );
        assert_eq!(
            log_group_name("arn:aws:logs:eu-central-1:123456789012:log-group:/ihp/demo:*"),
            Some("/ihp/demo")
        );
        assert_eq!(
            log_group_name("arn:aws:logs:eu-central-1:123456789012:log-group:/ihp/a:b"),
            Some("/ihp/a:b")
        );
        assert_eq!(log_group_name("arn:aws:s3:::x"), None);
    }
}
