//! The AWS side: configuration, identity, and one module per service.
//!
//! Configuration comes from the SDK's standard chain (environment,
//! profiles, SSO, AWS_ENDPOINT_URL), so LocalStack and moto work unchanged.

pub mod ec2;
pub mod rds;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;

use crate::desired::{self, Facts};
use crate::executor::{BoxFuture, Operator};
use crate::model::{Attrs, Kind, Observed, Value};
use crate::password;
use crate::plan::{AttrChange, Change};
use crate::retry::Budgets;
use crate::stack::Stack;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ec2(#[from] ec2::Error),
    #[error(transparent)]
    Rds(#[from] rds::Error),
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
            Error::Rds(e) => e.code(),
            Error::Identity { source } => source.code(),
        }
    }
}

/// Clients for one stack in one region.
pub struct Aws {
    pub account: String,
    pub partition: String,
    pub ec2: ec2::Ec2,
    pub rds: rds::Rds,
}

/// What the next step (deploy-to-nixos, the app) needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    pub instance_dns: String,
    pub db_endpoint: String,
    pub db_username: String,
}

impl Aws {
    /// Loads the SDK configuration for the stack's region and checks the
    /// credentials with one STS call, so a missing profile fails first.
    pub async fn connect(stack: &Stack) -> Result<Self, Error> {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(stack.region.clone()))
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
                &stack.prefix,
                Budgets::default(),
            ),
            rds: rds::Rds::new(
                aws_sdk_rds::Client::new(&config),
                &stack.prefix,
                stack.name("db-subnets"),
                desired::database_identifier(stack),
                stack.db_password.clone(),
            ),
        })
    }

    /// Every live resource of the stack.
    pub async fn observe(&self) -> Result<Vec<Observed>, Error> {
        let (ec2, rds) = tokio::join!(self.ec2.observe(), self.rds.observe());
        Ok([ec2?, rds?].concat())
    }

    /// What planning must learn from AWS: the key pair exists, which image a
    /// new server would use, and whether the password changed.
    pub async fn facts(&self, stack: &Stack, observed: &[Observed]) -> Result<Facts, Error> {
        let (key, image) = tokio::join!(
            self.ec2.check_key_pair(&stack.key_name, &stack.region),
            self.ec2.choose_image(
                &stack.instance.image,
                &stack.instance.instance_type,
                &stack.region
            ),
        );
        key?;
        let (image_choice, image) = image?;
        let live_hash = observed
            .iter()
            .find(|o| o.address.kind == Kind::Database)
            .and_then(|o| match o.attrs.get("password") {
                Some(Value::Sensitive(h)) => Some(h.clone()),
                _ => None,
            });
        let password = stack.db_password.clone();
        // Argon2 is slow on purpose: keep it off the async threads.
        let password_hash = tokio::task::spawn_blocking(move || match live_hash {
            Some(h) if password::verify(&h, password.expose()) => h,
            _ => password::hash(password.expose()),
        })
        .await
        .unwrap_or_default();
        Ok(Facts {
            image,
            image_choice,
            password_hash,
        })
    }

    /// The server's DNS name and the database's endpoint, when both exist.
    pub async fn outputs(&self) -> Result<Option<Outputs>, Error> {
        let (dns, db) = tokio::join!(self.ec2.instance_dns(), self.rds.endpoint());
        Ok(match (dns?, db?) {
            (Some(instance_dns), Some((db_endpoint, db_username))) => Some(Outputs {
                instance_dns,
                db_endpoint,
                db_username,
            }),
            _ => None,
        })
    }
}

fn is_rds(kind: Kind) -> bool {
    matches!(kind, Kind::DbSubnetGroup | Kind::Database)
}

impl Operator for Aws {
    type Error = Error;

    fn create<'a>(
        &'a self,
        change: &'a Change,
        attrs: Attrs,
    ) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            if is_rds(change.address.kind) {
                Ok(self
                    .rds
                    .create(&change.address, &change.tags, &attrs)
                    .await?)
            } else {
                Ok(self
                    .ec2
                    .create(&change.address, &change.tags, &attrs)
                    .await?)
            }
        })
    }

    fn update<'a>(
        &'a self,
        change: &'a Change,
        id: &'a str,
        attrs: Vec<AttrChange>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if is_rds(change.address.kind) {
                Ok(self.rds.update(&change.address, &attrs).await?)
            } else {
                Ok(self.ec2.update(&change.address, id, &attrs).await?)
            }
        })
    }

    fn delete<'a>(
        &'a self,
        change: &'a Change,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            if is_rds(change.address.kind) {
                Ok(self.rds.delete(&change.address).await?)
            } else {
                self.ec2.delete(&change.address, id).await?;
                Ok(None)
            }
        })
    }
}
