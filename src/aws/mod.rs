//! The AWS side: configuration, identity, and one module per service.
//!
//! Configuration comes from the SDK's standard chain (environment,
//! profiles, SSO, AWS_ENDPOINT_URL), so LocalStack and moto work unchanged.

pub mod ec2;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;

use crate::executor::{BoxFuture, Operator};
use crate::model::{Attrs, Observed};
use crate::plan::{AttrChange, Change};
use crate::retry::Budgets;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ec2(#[from] ec2::Error),
    #[error(
        "failed to find out which AWS account to use: {}\n  (check your credentials: AWS_PROFILE, \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or `aws sso login`, and AWS_ENDPOINT_URL if you use an emulator)",
        ec2::describe(source)
    )]
    Identity {
        #[source]
        source: aws_sdk_sts::Error,
    },
}

impl Error {
    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Ec2(e) => e.code(),
            Error::Identity { source } => source.code(),
        }
    }
}

/// Clients for one stack in one region.
pub struct Aws {
    pub account: String,
    pub partition: String,
    pub ec2: ec2::Ec2,
}

impl Aws {
    /// Loads the SDK configuration for `region` and checks the credentials
    /// with one STS call, so a missing profile fails before anything else.
    pub async fn connect(prefix: &str, region: &str) -> Result<Self, Error> {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .load()
            .await;
        let identity = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| Error::Identity { source: e.into() })?;
        let arn = identity.arn().unwrap_or_default();
        Ok(Aws {
            account: identity.account().unwrap_or_default().to_string(),
            // arn:<partition>:sts::<account>:...
            partition: arn.split(':').nth(1).unwrap_or("aws").to_string(),
            ec2: ec2::Ec2::new(
                aws_sdk_ec2::Client::new(&config),
                prefix,
                Budgets::default(),
            ),
        })
    }

    /// Every live resource that carries the stack's tag.
    pub async fn observe(&self) -> Result<Vec<Observed>, Error> {
        Ok(self.ec2.observe().await?)
    }
}

impl Operator for Aws {
    type Error = Error;

    fn create<'a>(
        &'a self,
        change: &'a Change,
        attrs: Attrs,
    ) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            Ok(self
                .ec2
                .create(&change.address, &change.tags, &attrs)
                .await?)
        })
    }

    fn update<'a>(
        &'a self,
        change: &'a Change,
        id: &'a str,
        attrs: Vec<AttrChange>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { Ok(self.ec2.update(&change.address, id, &attrs).await?) })
    }

    fn delete<'a>(&'a self, change: &'a Change, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { Ok(self.ec2.delete(&change.address, id).await?) })
    }
}
