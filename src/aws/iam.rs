//! IAM: the managed policies, the server's role and instance profile, and
//! the optional user with a static access key. IAM names are account-wide,
//! so every name carries the prefix; an entity counts as the stack's only
//! with the stack's tag.

use std::collections::BTreeMap;

use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;

use super::service::{CallError, Created, NewSecret, NotOurs, Service, Wanted, ours, required};
use crate::desired;
use crate::model::{Address, Attrs, Item, Kind, Observed, Ref, Value};
use crate::plan::{AttrChange, Change};
use crate::policies::{self, Arns};
use async_trait::async_trait;

/// What to do about a resource of this name that isn't the stack's.
const REMEDY: &str = "IAM names are account-wide: choose another prefix, or delete or tag it";

/// A failed IAM call.
pub type Call = CallError<aws_sdk_iam::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(transparent)]
    NotOurs(#[from] NotOurs),
    #[error("{action} {target}: the response lacks {field}")]
    Incomplete {
        action: &'static str,
        target: String,
        field: &'static str,
    },
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            _ => None,
        }
    }
}

fn is_code(e: &Error, code: &str) -> bool {
    e.code() == Some(code)
}

fn iam_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

fn set(items: impl IntoIterator<Item = Item>) -> Value {
    Value::Set(items.into_iter().collect())
}

/// What the access key file says: the env-file IHP's S3 storage reads.
pub fn key_file_text(key_id: &str, secret: &str, region: &str, bucket: &str) -> String {
    format!(
        "# Written once by ihp-infra when the key was made; AWS never shows the secret again.\n\
         AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\nAWS_REGION={region}\nS3_BUCKET={bucket}\n"
    )
}

pub struct Iam {
    client: Client,
    prefix: String,
    arns: Arns,
}

impl Iam {
    pub fn new(client: Client, prefix: &str, arns: Arns) -> Self {
        Iam {
            client,
            prefix: prefix.to_string(),
            arns,
        }
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, Error> {
        // Each by the name the stack gives it; none to look for, nothing found.
        async fn by_name<
            'n,
            F: std::future::Future<Output = Result<Option<Vec<Observed>>, Error>>,
        >(
            name: Option<&'n str>,
            observe: impl FnOnce(&'n str) -> F,
        ) -> Result<Option<Vec<Observed>>, Error> {
            match name {
                Some(name) => observe(name).await,
                None => Ok(None),
            }
        }
        let policies = wanted.of_kind(Kind::IamPolicy).map(|d| {
            by_name(wanted.name(&d.address), |name| {
                self.observe_policy(name, d.address.clone())
            })
        });
        let (policies, role, profile, user, smtp_user) = tokio::try_join!(
            futures::future::try_join_all(policies),
            by_name(wanted.name(&desired::role()), |n| self.observe_role(n)),
            by_name(wanted.name(&desired::instance_profile()), |n| {
                self.observe_profile(n)
            }),
            by_name(wanted.name(&desired::s3_user()), |n| {
                self.observe_user(n, desired::s3_user(), desired::access_key())
            }),
            by_name(wanted.name(&desired::smtp_user()), |n| {
                self.observe_user(n, desired::smtp_user(), desired::smtp_key())
            }),
        )?;
        Ok(policies
            .into_iter()
            .chain([role, profile, user, smtp_user])
            .flatten()
            .flatten()
            .collect())
    }

    async fn observe_policy(
        &self,
        name: &str,
        address: Address,
    ) -> Result<Option<Vec<Observed>>, Error> {
        let arn = self.arns.policy(name);
        let out = match self.client.get_policy().policy_arn(&arn).send().await {
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
            other => other.map_err(Call::on("read policy", name))?,
        };
        let Some(policy) = out.policy() else {
            return Ok(None);
        };
        let tags = tag_map(policy.tags());
        ours(&tags, &self.prefix, "IAM policy", name, REMEDY)?;
        let version = policy.default_version_id().unwrap_or("v1");
        let document = self
            .client
            .get_policy_version()
            .policy_arn(&arn)
            .version_id(version)
            .send()
            .await
            .map_err(Call::on("read policy", name))?
            .policy_version()
            .and_then(|v| v.document())
            .and_then(policies::canonical);
        Ok(Some(vec![Observed {
            address,
            id: arn,
            attrs: BTreeMap::from([
                ("name", Value::Text(name.to_string())),
                ("document", document.map(Value::Json).unwrap_or(Value::None)),
            ]),
            tags,
        }]))
    }

    async fn attached_to_role(&self, role: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .client
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .map_err(Call::on("list policies of role", role))?
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_string))
            .collect())
    }

    async fn attached_to_user(&self, user: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .client
            .list_attached_user_policies()
            .user_name(user)
            .send()
            .await
            .map_err(Call::on("list policies of user", user))?
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_string))
            .collect())
    }

    async fn observe_role(&self, name: &str) -> Result<Option<Vec<Observed>>, Error> {
        let out = match self.client.get_role().role_name(name).send().await {
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
            other => other.map_err(Call::on("read role", name))?,
        };
        let Some(role) = out.role() else {
            return Ok(None);
        };
        let tags = tag_map(role.tags());
        ours(&tags, &self.prefix, "IAM role", name, REMEDY)?;
        let trust = role
            .assume_role_policy_document()
            .and_then(policies::canonical);
        let attached = self.attached_to_role(name).await?;
        Ok(Some(vec![Observed {
            address: desired::role(),
            id: name.to_string(),
            attrs: BTreeMap::from([
                ("name", Value::Text(name.to_string())),
                (
                    "assume_role_policy",
                    trust.map(Value::Json).unwrap_or(Value::None),
                ),
                (
                    "policies",
                    set(attached.into_iter().map(|a| Item::Policy(Ref::Id(a)))),
                ),
            ]),
            tags,
        }]))
    }

    async fn observe_profile(&self, name: &str) -> Result<Option<Vec<Observed>>, Error> {
        let out = match self
            .client
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
            other => other.map_err(Call::on("read instance profile", name))?,
        };
        let Some(profile) = out.instance_profile() else {
            return Ok(None);
        };
        let tags = tag_map(profile.tags());
        ours(&tags, &self.prefix, "IAM instance profile", name, REMEDY)?;
        let roles = profile
            .roles()
            .iter()
            .map(|r| Item::Role(Ref::Id(r.role_name().to_string())));
        Ok(Some(vec![Observed {
            address: desired::instance_profile(),
            id: name.to_string(),
            attrs: BTreeMap::from([
                ("name", Value::Text(name.to_string())),
                ("roles", set(roles)),
            ]),
            tags,
        }]))
    }

    /// The user `name` at `address`, and its keys at `key`.
    async fn observe_user(
        &self,
        name: &str,
        address: crate::model::Address,
        key: crate::model::Address,
    ) -> Result<Option<Vec<Observed>>, Error> {
        let out = match self.client.get_user().user_name(name).send().await {
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
            other => other.map_err(Call::on("read user", name))?,
        };
        let Some(user) = out.user() else {
            return Ok(None);
        };
        let tags = tag_map(user.tags());
        ours(&tags, &self.prefix, "IAM user", name, REMEDY)?;
        let attached = self.attached_to_user(name).await?;
        let mut observed = vec![Observed {
            address,
            id: name.to_string(),
            attrs: BTreeMap::from([
                ("name", Value::Text(name.to_string())),
                (
                    "policies",
                    set(attached.into_iter().map(|a| Item::Policy(Ref::Id(a)))),
                ),
            ]),
            tags: tags.clone(),
        }];
        // Keys carry no tags: they are found through their user.
        for id in self.key_ids(name).await? {
            observed.push(Observed {
                address: key.clone(),
                id,
                attrs: BTreeMap::from([("user", Value::Ref(Ref::Id(name.to_string())))]),
                tags: BTreeMap::new(),
            });
        }
        Ok(Some(observed))
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        if change.address.kind == Kind::AccessKey {
            let user = required(attrs.id("user"), change, "user")?;
            let out = self.create_access_key(user).await?;
            let key = out.access_key().ok_or_else(|| Error::Incomplete {
                action: "create access key of",
                target: user.to_string(),
                field: "AccessKey",
            })?;
            // The secret exists only in this answer: the session stores it
            // before anything else.
            return Ok(Created {
                id: key.access_key_id().to_string(),
                secret: Some(NewSecret::AccessKey {
                    role: change.address.role.clone(),
                    id: key.access_key_id().to_string(),
                    secret: key.secret_access_key().to_string(),
                }),
            });
        }
        let name = required(attrs.text("name"), change, "name")?;
        match self.create_named(change, name, attrs).await? {
            Some(id) => Ok(Created::id(id)),
            None => Err(super::Error::Unrouted {
                kind: change.address.kind,
            }),
        }
    }

    /// Creates a policy, role, instance profile or user; returns its id
    /// (none for another kind).
    async fn create_named(
        &self,
        change: &Change,
        name: &str,
        attrs: &Attrs,
    ) -> Result<Option<String>, Error> {
        let tags = &change.tags;
        let name = name.to_string();
        let exists = |e: &Call| e.code() == Some("EntityAlreadyExists");
        let id = match change.address.kind {
            Kind::IamPolicy => {
                let arn = self.arns.policy(&name);
                let created = self
                    .client
                    .create_policy()
                    .policy_name(&name)
                    .policy_document(attrs.text("document").unwrap_or_default())
                    .set_tags(Some(iam_tags(tags)))
                    .send()
                    .await
                    .map_err(Call::on("create policy", &name));
                match created {
                    Err(e) if exists(&e) => {}
                    other => drop(other?),
                }
                arn
            }
            Kind::IamRole => {
                let created = self
                    .client
                    .create_role()
                    .role_name(&name)
                    .assume_role_policy_document(
                        attrs.text("assume_role_policy").unwrap_or_default(),
                    )
                    .description(format!(
                        "ihp-infra: the app server of stack {}",
                        self.prefix
                    ))
                    .set_tags(Some(iam_tags(tags)))
                    .send()
                    .await
                    .map_err(Call::on("create role", &name));
                match created {
                    Err(e) if exists(&e) => {}
                    other => drop(other?),
                }
                for arn in attrs.ids("policies") {
                    self.attach_role(&name, &arn).await?;
                }
                name
            }
            Kind::InstanceProfile => {
                let created = self
                    .client
                    .create_instance_profile()
                    .instance_profile_name(&name)
                    .set_tags(Some(iam_tags(tags)))
                    .send()
                    .await
                    .map_err(Call::on("create instance profile", &name));
                match created {
                    Err(e) if exists(&e) => {}
                    other => drop(other?),
                }
                for role in attrs.ids("roles") {
                    self.add_role(&name, &role).await?;
                }
                name
            }
            Kind::IamUser => {
                let created = self
                    .client
                    .create_user()
                    .user_name(&name)
                    .set_tags(Some(iam_tags(tags)))
                    .send()
                    .await
                    .map_err(Call::on("create user", &name));
                match created {
                    Err(e) if exists(&e) => {}
                    other => drop(other?),
                }
                for arn in attrs.ids("policies") {
                    self.attach_user(&name, &arn).await?;
                }
                name
            }
            _ => return Ok(None),
        };
        Ok(Some(id))
    }

    /// CreateAccessKey takes no idempotency token, and the secret comes
    /// only in its answer: a key made by a call whose answer was lost is of
    /// no use to anyone. So the SDK must not resend it on its own; after a
    /// fault that may hide a done create, the user's keys that weren't there
    /// before are deleted, then it is sent again.
    async fn create_access_key(
        &self,
        user: &str,
    ) -> Result<aws_sdk_iam::operation::create_access_key::CreateAccessKeyOutput, Error> {
        // The client's budget, as every other call has.
        let attempts = self
            .client
            .config()
            .retry_config()
            .map_or(crate::retry::DEFAULT_MAX_ATTEMPTS, |r| r.max_attempts());
        let mut waits = crate::retry::resend_waits(attempts);
        let before = self.key_ids(user).await?;
        let mut maybe_made = false;
        loop {
            let e = match self
                .client
                .create_access_key()
                .user_name(user)
                .customize()
                .config_override(
                    aws_sdk_iam::config::Builder::default()
                        .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled()),
                )
                .send()
                .await
            {
                Ok(out) => {
                    if maybe_made {
                        // IAM's lists may lag its writes: look once more.
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let made = out.access_key().map(|k| k.access_key_id());
                        self.delete_lost_keys(user, &before, made).await?;
                    }
                    return Ok(out);
                }
                Err(e) => e,
            };
            let done = super::service::maybe_done(&e);
            let wait = waits.next();
            if wait.is_none() || !(done || super::service::is_throttle(e.code())) {
                return Err(Call::on("create access key of", user)(e).into());
            }
            if done {
                maybe_made = true;
                self.delete_lost_keys(user, &before, None).await?;
            }
            super::calls::survived_fault();
            tokio::time::sleep(wait.unwrap_or_default()).await;
        }
    }

    /// Deletes the user's keys that are neither in `before` nor `keep`:
    /// made by a create whose answer (and secret) was lost.
    async fn delete_lost_keys(
        &self,
        user: &str,
        before: &[String],
        keep: Option<&str>,
    ) -> Result<(), Error> {
        for id in self.key_ids(user).await? {
            if !before.contains(&id) && Some(id.as_str()) != keep {
                tracing::info!(user, key = %id, "deleting the key whose answer (and secret) was lost");
                self.delete_key(user, &id).await?;
            }
        }
        Ok(())
    }

    async fn key_ids(&self, user: &str) -> Result<Vec<String>, Error> {
        let keys = self
            .client
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .map_err(Call::on("list access keys of", user))?;
        Ok(keys
            .access_key_metadata()
            .iter()
            .filter_map(|k| k.access_key_id().map(String::from))
            .collect())
    }

    async fn delete_key(&self, user: &str, id: &str) -> Result<(), Error> {
        match self
            .client
            .delete_access_key()
            .user_name(user)
            .access_key_id(id)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| Call::on("delete access key", id)(e).into()),
        }
    }

    async fn update(
        &self,
        address: &Address,
        id: &str,
        changes: &[AttrChange],
    ) -> Result<(), Error> {
        for c in changes {
            let (added, removed) = c.set_delta();
            let ids = |items: std::collections::BTreeSet<Item>| -> Vec<String> {
                items
                    .iter()
                    .filter_map(Item::id)
                    .map(str::to_string)
                    .collect()
            };
            match (address.kind, c.name, &c.after) {
                (Kind::IamPolicy, "document", Value::Json(document)) => {
                    self.new_policy_version(id, document).await?
                }
                (Kind::IamRole, "assume_role_policy", Value::Json(document)) => {
                    self.client
                        .update_assume_role_policy()
                        .role_name(id)
                        .policy_document(document)
                        .send()
                        .await
                        .map_err(Call::on("update trust policy of role", id))?;
                }
                (Kind::IamRole, "policies", _) => {
                    for arn in ids(added) {
                        self.attach_role(id, &arn).await?;
                    }
                    for arn in ids(removed) {
                        self.detach_role(id, &arn).await?;
                    }
                }
                (Kind::IamUser, "policies", _) => {
                    for arn in ids(added) {
                        self.attach_user(id, &arn).await?;
                    }
                    for arn in ids(removed) {
                        self.detach_user(id, &arn).await?;
                    }
                }
                (Kind::InstanceProfile, "roles", _) => {
                    for role in ids(removed) {
                        self.remove_role(id, &role).await?;
                    }
                    for role in ids(added) {
                        self.add_role(id, &role).await?;
                    }
                }
                (_, "tags", _) => self.tag(address.kind, id, &c.added_tags()).await?,
                _ => {}
            }
        }
        Ok(())
    }

    async fn tag(
        &self,
        kind: Kind,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let tags = Some(iam_tags(tags));
        match kind {
            Kind::IamPolicy => {
                let request = self.client.tag_policy().policy_arn(id).set_tags(tags);
                request
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Call::on("tag", id)(e).into())
            }
            Kind::IamRole => {
                let request = self.client.tag_role().role_name(id).set_tags(tags);
                request
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Call::on("tag", id)(e).into())
            }
            Kind::InstanceProfile => {
                let request = self
                    .client
                    .tag_instance_profile()
                    .instance_profile_name(id)
                    .set_tags(tags);
                request
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Call::on("tag", id)(e).into())
            }
            Kind::IamUser => {
                let request = self.client.tag_user().user_name(id).set_tags(tags);
                request
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Call::on("tag", id)(e).into())
            }
            _ => Ok(()),
        }
    }

    /// A changed document is a new default version; AWS keeps at most five,
    /// so the oldest non-default one goes first when the limit is reached.
    async fn new_policy_version(&self, arn: &str, document: &str) -> Result<(), Error> {
        let versions = self
            .client
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(Call::on("list versions of policy", arn))?;
        let mut old: Vec<_> = versions
            .versions()
            .iter()
            .filter(|v| !v.is_default_version())
            .collect();
        if versions.versions().len() >= 5 {
            old.sort_by_key(|v| v.create_date().map(|d| d.secs()).unwrap_or(0));
            if let Some(oldest) = old.first().and_then(|v| v.version_id()) {
                self.client
                    .delete_policy_version()
                    .policy_arn(arn)
                    .version_id(oldest)
                    .send()
                    .await
                    .map_err(Call::on("delete old version of policy", arn))?;
            }
        }
        self.client
            .create_policy_version()
            .policy_arn(arn)
            .policy_document(document)
            .set_as_default(true)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("update policy", arn)(e).into())
    }

    async fn attach_role(&self, role: &str, arn: &str) -> Result<(), Error> {
        self.client
            .attach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("attach policy to role", role)(e).into())
    }

    async fn detach_role(&self, role: &str, arn: &str) -> Result<(), Error> {
        match self
            .client
            .detach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| Call::on("detach policy from role", role)(e).into()),
        }
    }

    async fn attach_user(&self, user: &str, arn: &str) -> Result<(), Error> {
        self.client
            .attach_user_policy()
            .user_name(user)
            .policy_arn(arn)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("attach policy to user", user)(e).into())
    }

    async fn detach_user(&self, user: &str, arn: &str) -> Result<(), Error> {
        match self
            .client
            .detach_user_policy()
            .user_name(user)
            .policy_arn(arn)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| Call::on("detach policy from user", user)(e).into()),
        }
    }

    async fn add_role(&self, profile: &str, role: &str) -> Result<(), Error> {
        let added = self
            .client
            .add_role_to_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
            .map_err(|e| Call::on("add role to instance profile", profile)(e).into());
        match added {
            // A profile holds one role; an interrupted run may have added it.
            Err(e) if is_code(&e, "LimitExceeded") || is_code(&e, "EntityAlreadyExists") => Ok(()),
            other => other.map(drop),
        }
    }

    async fn remove_role(&self, profile: &str, role: &str) -> Result<(), Error> {
        let e = match self
            .client
            .remove_role_from_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(()),
            Err(e) => e,
        };
        // A resend after a lost answer fails although the first one did it:
        // AWS says NoSuchEntity, but a 5xx is possible too (moto answers
        // one). Whether the role is still in the profile settles it.
        if !self.profile_roles(profile).await?.iter().any(|r| r == role) {
            return Ok(());
        }
        Err(Call::on("remove role from instance profile", profile)(e).into())
    }

    /// The roles in instance profile `profile` (none when it is gone).
    async fn profile_roles(&self, profile: &str) -> Result<Vec<String>, Error> {
        match self
            .client
            .get_instance_profile()
            .instance_profile_name(profile)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(vec![]),
            other => Ok(other
                .map_err(Call::on("read instance profile", profile))?
                .instance_profile()
                .map(|p| {
                    p.roles()
                        .iter()
                        .map(|r| r.role_name().to_string())
                        .collect()
                })
                .unwrap_or_default()),
        }
    }

    /// Deletes in the order IAM insists on: detach, old versions, then the
    /// thing itself; keys before their user; roles out of profiles first.
    async fn delete(&self, change: &Change, id: &str) -> Result<(), super::Error> {
        let result = match change.address.kind {
            Kind::IamPolicy => self.delete_policy(id).await,
            Kind::IamRole => self.delete_role(id).await,
            Kind::InstanceProfile => self.delete_profile(id).await,
            Kind::IamUser => self.delete_user(id).await,
            // A key is found through its user.
            Kind::AccessKey => {
                let user = required(change.observed.id("user"), change, "user")?;
                self.delete_key(user, id).await
            }
            kind => return Err(super::Error::Unrouted { kind }),
        };
        match result {
            Err(e) if is_code(&e, "NoSuchEntity") => Ok(()),
            other => Ok(other?),
        }
    }

    async fn delete_policy(&self, arn: &str) -> Result<(), Error> {
        // Deleting a policy still attached leaves entities that can't be deleted.
        let entities = self
            .client
            .list_entities_for_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(Call::on("list users of policy", arn))?;
        for r in entities.policy_roles() {
            if let Some(role) = r.role_name() {
                self.detach_role(role, arn).await?;
            }
        }
        for u in entities.policy_users() {
            if let Some(user) = u.user_name() {
                self.detach_user(user, arn).await?;
            }
        }
        for g in entities.policy_groups() {
            if let Some(group) = g.group_name() {
                self.client
                    .detach_group_policy()
                    .group_name(group)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(Call::on("detach policy from group", group))?;
            }
        }
        let versions = self
            .client
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(Call::on("list versions of policy", arn))?;
        for v in versions
            .versions()
            .iter()
            .filter(|v| !v.is_default_version())
        {
            if let Some(version) = v.version_id() {
                self.client
                    .delete_policy_version()
                    .policy_arn(arn)
                    .version_id(version)
                    .send()
                    .await
                    .map_err(Call::on("delete version of policy", arn))?;
            }
        }
        self.client
            .delete_policy()
            .policy_arn(arn)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("delete policy", arn)(e).into())
    }

    async fn delete_role(&self, role: &str) -> Result<(), Error> {
        for arn in self.attached_to_role(role).await? {
            self.detach_role(role, &arn).await?;
        }
        let inline = self
            .client
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .map_err(Call::on("list inline policies of role", role))?;
        for name in inline.policy_names() {
            self.client
                .delete_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .map_err(Call::on("delete inline policy of role", role))?;
        }
        let profiles = self
            .client
            .list_instance_profiles_for_role()
            .role_name(role)
            .send()
            .await
            .map_err(Call::on("list instance profiles of role", role))?;
        for p in profiles.instance_profiles() {
            self.remove_role(p.instance_profile_name(), role).await?;
        }
        self.client
            .delete_role()
            .role_name(role)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("delete role", role)(e).into())
    }

    async fn delete_profile(&self, profile: &str) -> Result<(), Error> {
        for role in self.profile_roles(profile).await? {
            self.remove_role(profile, &role).await?;
        }
        match self
            .client
            .delete_instance_profile()
            .instance_profile_name(profile)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| Call::on("delete instance profile", profile)(e).into()),
        }
    }

    async fn delete_user(&self, user: &str) -> Result<(), Error> {
        for arn in self.attached_to_user(user).await? {
            self.detach_user(user, &arn).await?;
        }
        for id in self.key_ids(user).await? {
            self.delete_key(user, &id).await?;
        }
        self.client
            .delete_user()
            .user_name(user)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("delete user", user)(e).into())
    }
}

#[async_trait]
impl Service for Iam {
    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::IamPolicy,
            Kind::IamRole,
            Kind::InstanceProfile,
            Kind::IamUser,
            Kind::AccessKey,
        ]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        Ok(self.observe(wanted).await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        self.create(change, attrs).await
    }

    async fn update(
        &self,
        change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        Ok(self.update(&change.address, id, attrs).await?)
    }

    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        self.delete(change, id).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_an_env_file() {
        let text = key_file_text("AKIAEXAMPLE", "secret/123", "eu-central-1", "demo-storage");
        assert!(text.contains("\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\n"));
        assert!(text.contains("\nAWS_SECRET_ACCESS_KEY=secret/123\n"));
        assert!(text.ends_with("AWS_REGION=eu-central-1\nS3_BUCKET=demo-storage\n"));
    }
}
