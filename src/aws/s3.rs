//! S3: the bucket for the app's files, and the one the server's database
//! dumps go to (`backups`). Found by their (global) names; count as the
//! stack's only with the stack's tag.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};

use super::service::{CallError, Created, Service, Wanted, is_ours, required};
use crate::desired;
use crate::model::{Address, Attrs, Kind, Observed, Value};
use crate::plan::{Action, AttrChange, Change, DataOnDelete, Plan};
use crate::policies;
use crate::stack::STACK_TAG;
use async_trait::async_trait;

/// A failed S3 call.
pub type Call = CallError<aws_sdk_s3::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(
        "the bucket name {name} is taken by another AWS account (S3 names are global); \
         set {setting} in the stack file to a name of your own"
    )]
    Taken { name: String, setting: &'static str },
    #[error(
        "bucket {name} exists in this account but is not part of stack {prefix} (it lacks the tag \
         {STACK_TAG}={prefix}); tag it to let ihp-infra manage it, or set {setting} to another name"
    )]
    NotOurs {
        name: String,
        prefix: String,
        setting: &'static str,
    },
    #[error("internal error: a bucket setting is incomplete: {0}")]
    Build(#[from] aws_sdk_s3::error::BuildError),
    #[error(
        "bucket {name} still holds {objects} object versions and this run would delete it; \
         it stopped before changing anything. Copy what you need, then empty it, or run destroy \
         with {flag} to empty it (its files are lost)"
    )]
    NotEmpty {
        name: String,
        objects: usize,
        flag: &'static str,
    },
    #[error(transparent)]
    Tagging(#[from] super::tagging::Error),
}

impl Error {
    /// The error naming the stack file setting of the bucket it is about.
    fn named_by(self, setting: &'static str) -> Self {
        match self {
            Error::Taken { name, .. } => Error::Taken { name, setting },
            Error::NotOurs { name, prefix, .. } => Error::NotOurs {
                name,
                prefix,
                setting,
            },
            e => e,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            Error::Tagging(e) => e.code(),
            _ => None,
        }
    }
}

fn s3_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

/// The stack file setting that names the bucket at `address`.
fn setting(address: &Address) -> &'static str {
    if *address == desired::backups_bucket() {
        "backups.bucket"
    } else {
        "storage.bucket"
    }
}

/// The id of the lifecycle rule that expires replaced dumps.
const BACKUPS_RULE: &str = "ihp-infra-backups";

/// The codes S3 answers when the bucket belongs to someone else.
fn someone_elses(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("AccessDenied" | "AllAccessDisabled" | "BucketAlreadyExists")
    )
}

pub struct S3 {
    client: Client,
    tagging: super::tagging::Tagging,
    prefix: String,
    region: String,
    overlay: std::sync::Arc<super::overlay::Overlay>,
}

impl S3 {
    pub fn new(
        client: Client,
        tagging: super::tagging::Tagging,
        prefix: &str,
        region: &str,
        overlay: std::sync::Arc<super::overlay::Overlay>,
    ) -> Self {
        S3 {
            client,
            tagging,
            prefix: prefix.to_string(),
            region: region.to_string(),
            overlay,
        }
    }

    /// The tags of `bucket` when it is one of this account's that `adopt`
    /// may take over; None when there is none (or it is someone else's).
    pub async fn adoptable(&self, bucket: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
        match self.tags(bucket).await {
            Ok(Some(tags)) if self.owned(bucket).await? => Ok(Some(tags)),
            Ok(_) | Err(Error::Taken { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `tags` to the bucket's (PutBucketTagging replaces the set).
    pub async fn add_tags(
        &self,
        bucket: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let mut all = self.tags(bucket).await?.unwrap_or_default();
        all.extend(tags.clone());
        self.put_tags(bucket, &all).await
    }

    /// The bucket's tags; `None` when there is no such bucket.
    async fn tags(&self, bucket: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
        match self.client.get_bucket_tagging().bucket(bucket).send().await {
            Ok(out) => Ok(Some(
                out.tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect(),
            )),
            Err(e) => match e.code() {
                Some("NoSuchBucket") => Ok(None),
                Some("NoSuchTagSet") => Ok(Some(BTreeMap::new())),
                code if someone_elses(code) => Err(Error::Taken {
                    name: bucket.to_string(),
                    setting: "storage.bucket",
                }),
                _ => Err(Call::on("read tags of bucket", bucket)(e).into()),
            },
        }
    }

    /// The stack's buckets: those `wanted` names, and any other carrying
    /// the stack's tag (a renamed one, to be deleted).
    /// `wanted`: each bucket's address, name, whether it is versioned, and
    /// whether the stack wants it (or only looks for it, to delete it).
    async fn observe(
        &self,
        wanted: &[(Address, &str, bool, bool)],
    ) -> Result<Vec<Observed>, Error> {
        let names: Vec<&str> = wanted.iter().map(|(_, name, _, _)| *name).collect();
        let mut observed = self
            .tagging
            .renamed(
                "s3:bucket",
                Kind::Bucket,
                super::tagging::bucket_name,
                &names,
            )
            .await?;
        let found = futures::future::try_join_all(wanted.iter().map(
            |(address, bucket, versioned, wants)| async move {
                match self.observe_bucket(address, bucket, *versioned).await {
                    // A bucket the stack only looks for by its default name
                    // (backups turned off) may be anyone's, anywhere: not
                    // finding it there is no reason to stop; one of the
                    // stack's under another name is found by its tag.
                    Err(e) if !wants => {
                        tracing::debug!(bucket, error = %e, "left-out bucket not found by name");
                        Ok(None)
                    }
                    other => other,
                }
            },
        ))
        .await?;
        observed.extend(found.into_iter().flatten());
        Ok(observed)
    }

    /// One bucket, when it exists; `versioned` reads its versioning and
    /// lifecycle too (only the backups bucket sets them).
    async fn observe_bucket(
        &self,
        address: &Address,
        bucket: &str,
        versioned: bool,
    ) -> Result<Option<Observed>, Error> {
        let named = |e: Error| e.named_by(setting(address));
        let Some(tags) = self.tags(bucket).await.map_err(named)? else {
            return Ok(None);
        };
        let tags = self.overlay.tags(bucket, tags);
        if !is_ours(&tags, &self.prefix) {
            // Readable is not the same as ours: endpoints that don't enforce
            // other accounts' permissions (moto) answer for their buckets too.
            if !self.owned(bucket).await? {
                return Err(named(Error::Taken {
                    name: bucket.to_string(),
                    setting: "storage.bucket",
                }));
            }
            return Err(named(Error::NotOurs {
                name: bucket.to_string(),
                prefix: self.prefix.clone(),
                setting: "storage.bucket",
            }));
        }
        let (encryption, block, policy) = tokio::try_join!(
            self.encryption(bucket),
            self.public_access_blocked(bucket),
            self.policy(bucket)
        )?;
        let mut attrs = BTreeMap::from([
            ("name", Value::Text(bucket.to_string())),
            (
                "encryption",
                encryption.map(Value::Text).unwrap_or(Value::None),
            ),
            ("block_public_access", Value::Bool(block)),
            (
                "public_read_policy",
                policy.map(Value::Json).unwrap_or(Value::None),
            ),
        ]);
        if versioned {
            let (versioning, expiry) =
                tokio::try_join!(self.versioning(bucket), self.noncurrent_expiry(bucket))?;
            attrs.insert(
                "versioning",
                versioning.map(Value::Text).unwrap_or(Value::None),
            );
            attrs.insert(
                "noncurrent_expiry_days",
                expiry.map(|d| Value::Int(d.into())).unwrap_or(Value::None),
            );
        }
        Ok(Some(Observed {
            address: address.clone(),
            id: bucket.to_string(),
            attrs,
            tags,
        }))
    }

    /// "Enabled" or "Suspended"; none for a bucket never versioned.
    async fn versioning(&self, bucket: &str) -> Result<Option<String>, Error> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(Call::on("read versioning of bucket", bucket))?;
        Ok(out.status().map(|s| s.as_str().to_string()))
    }

    /// The days after which ihp-infra's rule expires replaced versions.
    async fn noncurrent_expiry(&self, bucket: &str) -> Result<Option<i32>, Error> {
        match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .rules()
                .iter()
                .find(|r| r.id() == Some(BACKUPS_RULE) && r.status() == &ExpirationStatus::Enabled)
                .and_then(|r| r.noncurrent_version_expiration())
                .and_then(|e| e.noncurrent_days())),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Ok(None),
            Err(e) => Err(Call::on("read lifecycle of bucket", bucket)(e).into()),
        }
    }

    async fn put_versioning(&self, bucket: &str, status: &str) -> Result<(), Error> {
        self.client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::from(status))
                    .build(),
            )
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("turn on versioning of bucket", bucket)(e).into())
    }

    /// Replaced versions expire after `days`; the current one never does
    /// (the newest dump stays, whatever happens to the server).
    async fn put_noncurrent_expiry(&self, bucket: &str, days: i64) -> Result<(), Error> {
        let rule = LifecycleRule::builder()
            .id(BACKUPS_RULE)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(i32::try_from(days).unwrap_or(i32::MAX))
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(7)
                    .build(),
            )
            .build()?;
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()?,
            )
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("set lifecycle of bucket", bucket)(e).into())
    }

    /// Whether this account owns the bucket (ListBuckets lists only ours).
    async fn owned(&self, bucket: &str) -> Result<bool, Error> {
        let pages: Vec<_> = self
            .client
            .list_buckets()
            .prefix(bucket)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("list buckets", "of this account"))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.buckets())
            .any(|b| b.name() == Some(bucket)))
    }

    async fn encryption(&self, bucket: &str) -> Result<Option<String>, Error> {
        match self
            .client
            .get_bucket_encryption()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().as_str().to_string())),
            Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => {
                Ok(None)
            }
            Err(e) => Err(Call::on("read encryption of bucket", bucket)(e).into()),
        }
    }

    async fn public_access_blocked(&self, bucket: &str) -> Result<bool, Error> {
        match self
            .client
            .get_public_access_block()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out.public_access_block_configuration().is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            })),
            Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => Ok(false),
            Err(e) => Err(Call::on("read public access block of bucket", bucket)(e).into()),
        }
    }

    async fn policy(&self, bucket: &str) -> Result<Option<String>, Error> {
        match self.client.get_bucket_policy().bucket(bucket).send().await {
            Ok(out) => Ok(out.policy().and_then(policies::canonical)),
            Err(e) if e.code() == Some("NoSuchBucketPolicy") => Ok(None),
            Err(e) => Err(Call::on("read policy of bucket", bucket)(e).into()),
        }
    }

    /// How many object versions (and delete markers) a bucket holds, up to 1000.
    async fn object_versions(&self, bucket: &str) -> Result<usize, Error> {
        let out = self
            .client
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await;
        match out {
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(0),
            other => {
                let out = other.map_err(Call::on("list objects of bucket", bucket))?;
                Ok(out.versions().len() + out.delete_markers().len())
            }
        }
    }

    /// Refuses a run that would have to empty a bucket.
    async fn check_deletable(&self, backups: bool, bucket: &str) -> Result<(), Error> {
        match self.object_versions(bucket).await? {
            0 => Ok(()),
            objects => Err(Error::NotEmpty {
                name: bucket.to_string(),
                objects,
                flag: if backups {
                    "--delete-backups"
                } else {
                    "--delete-bucket-contents"
                },
            }),
        }
    }

    async fn create(
        &self,
        bucket: &str,
        tags: &BTreeMap<String, String>,
        attrs: &Attrs,
    ) -> Result<(), Error> {
        let mut config = CreateBucketConfiguration::builder().set_tags(Some(s3_tags(tags)));
        // us-east-1 is the default and refuses to be named.
        if self.region != "us-east-1" {
            config =
                config.location_constraint(BucketLocationConstraint::from(self.region.as_str()));
        }
        let created = self
            .client
            .create_bucket()
            .bucket(bucket)
            .create_bucket_configuration(config.build())
            .send()
            .await;
        match created {
            Ok(_) => {}
            // An interrupted run made it: carry on.
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) if someone_elses(e.code()) => {
                return Err(Error::Taken {
                    name: bucket.to_string(),
                    setting: "storage.bucket",
                });
            }
            Err(e) => return Err(Call::on("create bucket", bucket)(e).into()),
        }
        // Endpoints that ignore tags at creation (moto) get them right after.
        if self
            .tags(bucket)
            .await?
            .is_none_or(|t| t.get(STACK_TAG) != Some(&self.prefix))
        {
            self.put_tags(bucket, tags).await?;
        }
        self.put_encryption(bucket).await?;
        let block = attrs.bool("block_public_access").unwrap_or(true);
        self.set_block(bucket, block).await?;
        if let Some(policy) = attrs.text("public_read_policy") {
            self.put_policy(bucket, policy).await?;
        }
        if let Some(status) = attrs.text("versioning") {
            self.put_versioning(bucket, status).await?;
        }
        if let Some(days) = attrs.int("noncurrent_expiry_days") {
            self.put_noncurrent_expiry(bucket, days).await?;
        }
        Ok(())
    }

    async fn update(&self, bucket: &str, changes: &[AttrChange]) -> Result<(), Error> {
        let after = |name: &str| changes.iter().find(|c| c.name == name).map(|c| &c.after);
        // Unblock before a public policy goes on; block after it came off.
        if let Some(Value::Bool(false)) = after("block_public_access") {
            self.set_block(bucket, false).await?;
        }
        match after("public_read_policy") {
            Some(Value::Json(policy)) => self.put_policy(bucket, policy).await?,
            Some(_) => {
                self.client
                    .delete_bucket_policy()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(Call::on("delete policy of bucket", bucket))?;
            }
            None => {}
        }
        if let Some(Value::Bool(true)) = after("block_public_access") {
            self.set_block(bucket, true).await?;
        }
        if after("encryption").is_some() {
            self.put_encryption(bucket).await?;
        }
        if let Some(Value::Text(status)) = after("versioning") {
            self.put_versioning(bucket, status).await?;
        }
        if let Some(Value::Int(days)) = after("noncurrent_expiry_days") {
            self.put_noncurrent_expiry(bucket, *days).await?;
        }
        if let Some(c) = changes.iter().find(|c| c.name == "tags") {
            // PutBucketTagging replaces the whole set: keep the others' tags.
            let mut tags = self.tags(bucket).await?.unwrap_or_default();
            tags.extend(c.added_tags());
            self.put_tags(bucket, &tags).await?;
        }
        Ok(())
    }

    async fn put_tags(&self, bucket: &str, tags: &BTreeMap<String, String>) -> Result<(), Error> {
        let tagging = Tagging::builder()
            .set_tag_set(Some(s3_tags(tags)))
            .build()
            .expect("the tag set is given");
        self.client
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("tag bucket", bucket)(e).into())
    }

    async fn put_encryption(&self, bucket: &str) -> Result<(), Error> {
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::Aes256)
                    .build()
                    .expect("the algorithm is set"),
            )
            .build();
        self.client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .expect("a rule is set"),
            )
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("turn on encryption of bucket", bucket)(e).into())
    }

    async fn set_block(&self, bucket: &str, block: bool) -> Result<(), Error> {
        if block {
            self.client
                .put_public_access_block()
                .bucket(bucket)
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .map(drop)
                .map_err(|e| Call::on("block public access to bucket", bucket)(e).into())
        } else {
            let result = self
                .client
                .delete_public_access_block()
                .bucket(bucket)
                .send()
                .await;
            match result {
                Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => Ok(()),
                other => other
                    .map(drop)
                    .map_err(|e| Call::on("allow public access to bucket", bucket)(e).into()),
            }
        }
    }

    async fn put_policy(&self, bucket: &str, policy: &str) -> Result<(), Error> {
        self.client
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy)
            .send()
            .await
            .map(drop)
            .map_err(|e| Call::on("set policy of bucket", bucket)(e).into())
    }

    async fn delete(&self, bucket: &str, empty_first: bool) -> Result<(), Error> {
        if empty_first {
            self.empty(bucket).await?;
        }
        match self.client.delete_bucket().bucket(bucket).send().await {
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| Call::on("delete bucket", bucket)(e).into()),
        }
    }

    /// Deletes every object version and delete marker, 1000 at a time.
    async fn empty(&self, bucket: &str) -> Result<(), Error> {
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .send()
                .await;
            let out = match out {
                Err(e) if e.code() == Some("NoSuchBucket") => return Ok(()),
                other => other.map_err(Call::on("list objects of bucket", bucket))?,
            };
            let ids: Vec<ObjectIdentifier> = out
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(
                    out.delete_markers()
                        .iter()
                        .map(|m| (m.key(), m.version_id())),
                )
                .filter_map(|(key, version)| {
                    ObjectIdentifier::builder()
                        .key(key?)
                        .set_version_id(version.map(str::to_string))
                        .build()
                        .ok()
                })
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            self.client
                .delete_objects()
                .bucket(bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(ids))
                        .quiet(true)
                        .build()
                        .expect("objects are set"),
                )
                .send()
                .await
                .map_err(Call::on("empty bucket", bucket))?;
        }
    }
}

#[async_trait]
impl Service for S3 {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Bucket]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        let mut buckets: Vec<(Address, &str, bool, bool)> = wanted
            .of_kind(Kind::Bucket)
            .filter_map(|d| {
                let name = wanted.name(&d.address)?;
                let versioned = d.attrs.iter().any(|a| a.name == "versioning");
                Some((d.address.clone(), name, versioned, wanted.wants(&d.address)))
            })
            .collect();
        // A left-out bucket under the name of a wanted one is that one.
        let wanted_names: Vec<&str> = buckets.iter().filter(|b| b.3).map(|b| b.1).collect();
        buckets.retain(|b| b.3 || !wanted_names.contains(&b.1));
        Ok(self.observe(&buckets).await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        let bucket = required(attrs.text("name"), change, "name")?;
        self.create(bucket, &change.tags, attrs)
            .await
            .map_err(|e| e.named_by(setting(&change.address)))?;
        Ok(Created::id(bucket))
    }

    async fn update(
        &self,
        _change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        Ok(self.update(id, attrs).await?)
    }

    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        let empty_first = change.data_on_delete == Some(DataOnDelete::EmptyFirst);
        self.delete(id, empty_first).await?;
        Ok(None)
    }

    /// A bucket with files is never emptied unasked: stop before changing
    /// anything rather than half-way.
    async fn check(&self, plan: &Plan) -> Result<(), super::Error> {
        for c in &plan.changes {
            if c.address.kind == Kind::Bucket
                && matches!(c.action, Action::Delete | Action::Replace)
                && c.data_on_delete != Some(DataOnDelete::EmptyFirst)
                && let Some(bucket) = &c.id
            {
                let backups = crate::plan::is_backups_bucket(c, &plan.prefix);
                self.check_deletable(backups, bucket).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_accounts_buckets_are_recognised() {
        assert!(someone_elses(Some("BucketAlreadyExists")));
        assert!(someone_elses(Some("AccessDenied")));
        assert!(!someone_elses(Some("BucketAlreadyOwnedByYou")));
        assert!(!someone_elses(Some("NoSuchBucket")));
    }

    #[test]
    fn taken_name_error_says_what_to_do() {
        let e = Error::Taken {
            name: "demo-storage".into(),
            setting: "storage.bucket",
        };
        assert!(e.to_string().contains("set storage.bucket"));
    }
}
