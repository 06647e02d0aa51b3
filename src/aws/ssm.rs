//! SSM Parameter Store: the hand-over's secrets (`/ihp-infra/<prefix>/`),
//! one SecureString per variable the server's app needs. Found by their
//! path (names are unique) and the stack's tag; compared by the digest of
//! their decrypted value, never shown.
//!
//! The values are made here, at create or update: the database URL from
//! the database's endpoint (read through the RDS service) and the stack's
//! password; the key pair from the secret the access key's create returned
//! (or the local key file, for stacks made before the hand-over).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{ParameterTier, ParameterType, ResourceTypeForTagging, Tag};

use super::service::{CallError, Created, NotOurs, Service, Wanted, ours};
use crate::handover::{self, Parameter};
use crate::model::{Address, Attrs, Kind, Observed, Value};
use crate::plan::{AttrChange, Change};
use crate::stack::Secret;
use async_trait::async_trait;

/// A failed SSM call.
pub type Call = CallError<aws_sdk_ssm::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(transparent)]
    NotOurs(#[from] NotOurs),
    #[error(transparent)]
    Rds(#[from] Box<super::rds::Error>),
    #[error("failed to write {name}: the database {identifier} has no endpoint yet")]
    NoEndpoint { name: String, identifier: String },
    #[error(
        "failed to write {name}: the secret of access key {key} is not known to this run (it was made by an earlier one); \
         run apply again: a key whose secret is lost is replaced"
    )]
    SecretUnknown { name: String, key: String },
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            Error::Rds(e) => e.code(),
            _ => None,
        }
    }
}

/// The access keys this run knows, by role (the S3 user's, the SMTP
/// user's): the id, and the secret when it is known (from the key's
/// create, its parameter, or the local key file). An SMTP key is known by
/// its id alone when its SMTP password is stored for it.
#[derive(Default)]
pub struct KeySecret(Mutex<BTreeMap<String, (String, Option<Secret>)>>);

impl KeySecret {
    pub fn set(&self, role: &str, id: &str, secret: Option<&str>) {
        if let Some(secret) = secret {
            crate::redact::register(secret);
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(role.to_string(), (id.to_string(), secret.map(Secret::new)));
    }
    pub fn get(&self, role: &str) -> Option<(String, Option<Secret>)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(role)
            .cloned()
    }
}

/// The key pair in a key file ihp-infra wrote (`s3_access_key.env`).
pub fn read_key_file(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    Some((value("AWS_ACCESS_KEY_ID")?, value("AWS_SECRET_ACCESS_KEY")?))
}

pub struct Ssm {
    client: Client,
    prefix: String,
    password: Secret,
    /// The database whose URL goes into DATABASE_URL, and its user.
    database: String,
    username: String,
    rds: Arc<super::rds::Rds>,
    /// SES's region: the SMTP password is derived for it.
    region: String,
    pub key: Arc<KeySecret>,
    /// The decrypted live values by parameter, from the last observe: what
    /// planning needs to know whether the key's secret is stored.
    live: Mutex<BTreeMap<&'static str, Secret>>,
}

const REMEDY: &str = "delete it, or tag it to let ihp-infra manage it";

impl Ssm {
    pub fn new(
        client: Client,
        prefix: &str,
        password: Secret,
        database: String,
        username: String,
        rds: Arc<super::rds::Rds>,
        region: &str,
    ) -> Self {
        Ssm {
            client,
            prefix: prefix.to_string(),
            password,
            database,
            username,
            rds,
            region: region.to_string(),
            key: Arc::default(),
            live: Mutex::default(),
        }
    }

    /// The live value of a parameter, as the last observe read it.
    pub fn live(&self, parameter: Parameter) -> Option<Secret> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(parameter.variable)
            .cloned()
    }

    async fn observe(&self) -> Result<Vec<Observed>, Error> {
        let path = handover::path(&self.prefix);
        let mut found = Vec::new();
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(&path)
            .recursive(true)
            .with_decryption(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Call::on("read parameters under", &path))?;
            for p in page.parameters() {
                if let Some(name) = p.name() {
                    found.push((
                        name.to_string(),
                        p.r#type().map(|t| t.as_str().to_string()),
                        p.value().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        let mut observed = Vec::new();
        let mut live = BTreeMap::new();
        for (name, kind, value) in found {
            let parameter = handover::by_name(&self.prefix, &name);
            // Masked in all output from now on; a key id is no secret
            // (the plan names the key by it).
            if !parameter.is_some_and(handover::holds_key_id) {
                crate::redact::register(&value);
            }
            let tags = self.tags(&name).await?;
            if parameter.is_none() && !super::service::is_ours(&tags, &self.prefix) {
                // Someone else's under our path: not ours to judge.
                continue;
            }
            ours(&tags, &self.prefix, "SSM parameter", &name, REMEDY)?;
            let role = match parameter {
                Some(p) => {
                    live.insert(p.variable, Secret::new(&value));
                    p.role.to_string()
                }
                // Left by another version: found to be deleted.
                None => name.rsplit('/').next().unwrap_or(&name).to_lowercase(),
            };
            observed.push(Observed {
                address: Address::new(Kind::Parameter, &role),
                id: name.clone(),
                attrs: BTreeMap::from([
                    ("name", Value::Text(name)),
                    ("type", kind.map(Value::Text).unwrap_or(Value::None)),
                    ("value", Value::Sensitive(handover::digest(&value))),
                ]),
                tags,
            });
        }
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
        Ok(observed)
    }

    async fn tags(&self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        Ok(self
            .client
            .list_tags_for_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .send()
            .await
            .map_err(Call::on("list tags of parameter", name))?
            .tag_list()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    /// The value a parameter should hold now.
    async fn value(&self, parameter: Parameter, name: &str) -> Result<Secret, Error> {
        if parameter == handover::DATABASE_URL {
            let endpoint = self
                .rds
                .endpoint(&self.database)
                .await
                .map_err(Box::new)?
                .ok_or_else(|| Error::NoEndpoint {
                    name: name.to_string(),
                    identifier: self.database.clone(),
                })?;
            return Ok(Secret::new(handover::database_url(
                &self.username,
                self.password.expose(),
                &endpoint.address,
                endpoint.port,
            )));
        }
        let role = handover::key_of(parameter).unwrap_or(handover::S3_KEY);
        let unknown = || Error::SecretUnknown {
            name: name.to_string(),
            key: if role == handover::SMTP_KEY {
                "of the SMTP user".into()
            } else {
                "of the S3 user".into()
            },
        };
        let (id, secret) = self.key.get(role).ok_or_else(unknown)?;
        if handover::holds_key_id(parameter) {
            return Ok(Secret::new(&id));
        }
        let secret = secret.ok_or_else(unknown)?;
        Ok(if parameter == handover::SMTP_PASSWORD {
            let password = crate::mail::smtp_password(&secret, &self.region);
            crate::redact::register(password.expose());
            password
        } else {
            secret
        })
    }

    async fn put(
        &self,
        name: &str,
        value: &Secret,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<(), aws_sdk_ssm::Error> {
        let tags = tags.map(ssm_tags);
        self.client
            .put_parameter()
            .name(name)
            .value(value.expose())
            .r#type(ParameterType::SecureString)
            .tier(ParameterTier::Standard)
            .overwrite(tags.is_none())
            .set_tags(tags)
            .send()
            .await
            .map(drop)
            .map_err(Into::into)
    }

    async fn add_tags(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<(), Error> {
        self.client
            .add_tags_to_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .set_tags(Some(ssm_tags(tags)))
            .send()
            .await
            .map_err(Call::on("tag parameter", name))?;
        Ok(())
    }

    fn parameter(&self, change: &Change) -> Option<Parameter> {
        handover::by_role(&change.address.role)
    }
}

fn ssm_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

fn call(action: &'static str, name: &str, e: aws_sdk_ssm::Error) -> Error {
    Error::Call(CallError {
        action,
        target: name.to_string(),
        source: Box::new(e),
    })
}

#[async_trait]
impl Service for Ssm {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Parameter]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        if wanted.of_kind(Kind::Parameter).next().is_none() {
            return Ok(Vec::new());
        }
        Ok(self.observe().await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        let name = super::service::required(attrs.text("name"), change, "name")?;
        let parameter = super::service::required(self.parameter(change), change, "role")?;
        let value = self.value(parameter, name).await?;
        match self.put(name, &value, Some(&change.tags)).await {
            // A lost answer to an earlier try: it is there, tags and all;
            // write the value again to be sure of it.
            Err(e) if e.code() == Some("ParameterAlreadyExists") => {
                self.put(name, &value, None)
                    .await
                    .map_err(|e| call("write parameter", name, e))?;
                self.add_tags(name, &change.tags).await?;
            }
            other => other.map_err(|e| call("create parameter", name, e))?,
        }
        Ok(Created::id(name))
    }

    async fn update(
        &self,
        change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        if attrs.iter().any(|a| a.name == "value" || a.name == "type") {
            let parameter = super::service::required(self.parameter(change), change, "role")?;
            let value = self.value(parameter, id).await?;
            self.put(id, &value, None)
                .await
                .map_err(|e| call("write parameter", id, e))?;
        }
        if let Some(tags) = attrs.iter().find(|a| a.name == "tags") {
            self.add_tags(id, &tags.added_tags()).await?;
        }
        Ok(())
    }

    async fn delete(&self, _change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        match self.client.delete_parameter().name(id).send().await {
            Err(e) if e.code() == Some("ParameterNotFound") => Ok(None),
            other => other
                .map(|_| None)
                .map_err(|e| Error::from(Call::on("delete parameter", id)(e)).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_pairs_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s3_access_key.env");
        std::fs::write(
            &path,
            super::super::iam::key_file_text("AKIAEXAMPLE", "se/cr+et=", "eu-central-1", "b"),
        )
        .unwrap();
        assert_eq!(
            read_key_file(&path),
            Some(("AKIAEXAMPLE".into(), "se/cr+et=".into()))
        );
        assert_eq!(read_key_file(&dir.path().join("missing")), None);
    }
}
