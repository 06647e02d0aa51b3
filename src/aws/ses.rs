//! SES (the v2 API): the domain identity the app's mail is sent as, with
//! Easy DKIM. Found by its name (the domain: unique per account and
//! region), then the stack's tag must be on it. Also says whether the
//! account may mail anyone yet (new accounts are in SES's sandbox).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::ProvideErrorMetadata;
use aws_sdk_sesv2::types::Tag;

use super::service::{CallError, Created, NotOurs, Service, Wanted, ours, required};
use crate::desired;
use crate::model::{Attrs, Kind, Observed, Value};
use crate::plan::{AttrChange, Change};
use crate::policies::Arns;

/// A failed SES call.
pub type Call = CallError<aws_sdk_sesv2::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(transparent)]
    NotOurs(#[from] NotOurs),
    #[error("internal error: a tag is incomplete: {0}")]
    Build(#[from] aws_sdk_sesv2::error::BuildError),
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            _ => None,
        }
    }

    /// LocalStack's community edition answers every SES v2 call with
    /// InternalFailure "... not included in your current license plan".
    pub fn hint(&self) -> Option<&'static str> {
        let Error::Call(e) = self else {
            return None;
        };
        super::service::not_emulated(e.code(), e.message()).then_some(
            "this endpoint has no SES v2 API (LocalStack's community edition lacks it); \
             mail needs it: use LocalStack Pro, moto, or AWS, or leave mail out",
        )
    }
}

const REMEDY: &str = "delete it in the SES console, or tag it to let ihp-infra manage it";

/// What `output` says of the identity and the account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailState {
    /// SES lets the app send as the domain (its DKIM records verified it).
    pub verified: bool,
    /// The CNAME records Easy DKIM needs: (name, value).
    pub dkim_records: Vec<(String, String)>,
    /// Whether the account may mail anyone (out of the sandbox); None when
    /// SES didn't say.
    pub production_access: Option<bool>,
}

/// The CNAME records of Easy DKIM tokens for `domain`, as SES documents them.
pub fn dkim_records(domain: &str, tokens: &[String]) -> Vec<(String, String)> {
    tokens
        .iter()
        .map(|t| {
            (
                format!("{t}._domainkey.{domain}"),
                format!("{t}.dkim.amazonses.com"),
            )
        })
        .collect()
}

pub struct Ses {
    client: Client,
    prefix: String,
    arns: Arns,
}

impl Ses {
    pub fn new(client: Client, prefix: &str, arns: Arns) -> Self {
        Ses {
            client,
            prefix: prefix.to_string(),
            arns,
        }
    }

    fn arn(&self, domain: &str) -> String {
        self.arns.ses_identity(domain)
    }

    async fn get(
        &self,
        domain: &str,
    ) -> Result<Option<aws_sdk_sesv2::operation::get_email_identity::GetEmailIdentityOutput>, Error>
    {
        match self
            .client
            .get_email_identity()
            .email_identity(domain)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.code() == Some("NotFoundException") => Ok(None),
            Err(e) => Err(Call::on("read SES identity", domain)(e).into()),
        }
    }

    async fn observe(&self, domain: &str) -> Result<Option<Observed>, Error> {
        let Some(identity) = self.get(domain).await? else {
            return Ok(None);
        };
        let tags: BTreeMap<String, String> = identity
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        ours(&tags, &self.prefix, "SES identity", domain, REMEDY)?;
        let tokens = identity
            .dkim_attributes()
            .map(|d| d.tokens().to_vec())
            .unwrap_or_default();
        Ok(Some(Observed {
            address: desired::email_identity(),
            id: domain.to_string(),
            attrs: BTreeMap::from([
                ("name", Value::Text(domain.to_string())),
                // Not compared: what the DKIM records hold.
                ("dkim_tokens", Value::Text(tokens.join(" "))),
            ]),
            tags,
        }))
    }

    /// The Easy DKIM tokens of identity `domain` (none while it has none).
    pub async fn dkim_tokens(&self, domain: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .get(domain)
            .await?
            .and_then(|i| i.dkim_attributes().map(|d| d.tokens().to_vec()))
            .unwrap_or_default())
    }

    /// The identity's state and the account's, for `output`.
    pub async fn state(&self, domain: &str) -> Result<MailState, Error> {
        let (identity, account) = tokio::join!(self.get(domain), self.client.get_account().send());
        let identity = identity?;
        Ok(MailState {
            verified: identity
                .as_ref()
                .is_some_and(|i| i.verified_for_sending_status()),
            dkim_records: identity
                .as_ref()
                .and_then(|i| i.dkim_attributes())
                .map(|d| dkim_records(domain, d.tokens()))
                .unwrap_or_default(),
            // An endpoint without GetAccount (moto) can't say.
            production_access: account.ok().map(|a| a.production_access_enabled()),
        })
    }

    fn tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, Error> {
        tags.iter()
            .map(|(k, v)| Ok(Tag::builder().key(k).value(v).build()?))
            .collect()
    }

    async fn tag(&self, domain: &str, tags: &BTreeMap<String, String>) -> Result<(), Error> {
        self.client
            .tag_resource()
            .resource_arn(self.arn(domain))
            .set_tags(Some(Self::tags(tags)?))
            .send()
            .await
            .map_err(Call::on("tag SES identity", domain))?;
        Ok(())
    }
}

#[async_trait]
impl Service for Ses {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::EmailIdentity]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        match wanted.name(&desired::email_identity()) {
            Some(domain) => Ok(self.observe(domain).await?.into_iter().collect()),
            None => Ok(Vec::new()),
        }
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        let domain = required(attrs.text("name"), change, "name")?;
        let created = self
            .client
            .create_email_identity()
            .email_identity(domain)
            .set_tags(Some(Self::tags(&change.tags)?))
            .send()
            .await;
        match created {
            // Made by an interrupted run (observe refuses one not ours).
            Err(e) if e.code() == Some("AlreadyExistsException") => {
                self.tag(domain, &change.tags).await?
            }
            other => {
                other.map_err(|e| Error::from(Call::on("create SES identity", domain)(e)))?;
            }
        }
        Ok(Created::id(domain))
    }

    async fn update(
        &self,
        _change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        if let Some(tags) = attrs.iter().find(|a| a.name == "tags") {
            self.tag(id, &tags.added_tags()).await?;
        }
        Ok(())
    }

    async fn delete(&self, _change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        match self
            .client
            .delete_email_identity()
            .email_identity(id)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NotFoundException") => Ok(None),
            other => other
                .map(|_| None)
                .map_err(|e| Error::from(Call::on("delete SES identity", id)(e)).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_records_are_named_as_ses_documents() {
        assert_eq!(
            dkim_records("example.org", &["abc123".to_string()]),
            [(
                "abc123._domainkey.example.org".to_string(),
                "abc123.dkim.amazonses.com".to_string()
            )]
        );
    }
}
