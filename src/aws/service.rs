//! The one trait every AWS service implements, and the helpers they share.
//!
//! A service serves a fixed set of kinds: it observes their live
//! resources, and creates, updates and deletes them from the plan's
//! changes. It holds a client and what identifies the stack (prefix,
//! account); every name it uses comes from the plan's attributes, or from
//! the [`Wanted`] resources it is told to look for.

use std::collections::BTreeMap;

use aws_sdk_sts::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;

use super::Error;
use crate::desired::Graph;
use crate::model::{Address, Attrs, Desired, Kind, Observed, Value};
use crate::plan::{AttrChange, Change, Plan};
use crate::stack::STACK_TAG;
use async_trait::async_trait;

/// What observe looks for: every resource the stack may have, those of
/// the parts it leaves out included (a live one of those is found, then
/// deleted). Resources without tags to search by are found by the names
/// these give.
pub struct Wanted<'a> {
    pub graph: &'a Graph,
}

impl Wanted<'_> {
    fn all(&self) -> impl Iterator<Item = &Desired> {
        self.graph.wanted.iter().chain(&self.graph.left_out)
    }

    /// Whether the stack wants the resource at `address` (a part it leaves
    /// out is still looked for).
    pub fn wants(&self, address: &Address) -> bool {
        self.graph.wanted.iter().any(|d| &d.address == address)
    }

    /// The `name` attribute of the resource at `address`.
    pub fn name(&self, address: &Address) -> Option<&str> {
        self.attr(address, "name")
    }

    /// A text attribute of the resource at `address`.
    pub fn attr(&self, address: &Address, name: &str) -> Option<&str> {
        let wanted = self.all().find(|d| &d.address == address)?;
        match &wanted.attrs.iter().find(|a| a.name == name)?.value {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The resources of `kind`.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Desired> {
        self.all().filter(move |d| d.address.kind == kind)
    }
}

/// What a create made: the new resource's id, and a secret AWS showed
/// only in its answer (an access key's), which the session stores.
#[derive(Debug)]
pub struct Created {
    pub id: String,
    pub secret: Option<NewSecret>,
}

impl Created {
    pub fn id(id: impl Into<String>) -> Self {
        Created {
            id: id.into(),
            secret: None,
        }
    }
}

/// A secret a create produced.
pub enum NewSecret {
    /// `role`: which of the stack's keys (`handover::S3_KEY`, `SMTP_KEY`).
    AccessKey {
        role: String,
        id: String,
        secret: String,
    },
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewSecret::AccessKey { id, .. } => write!(f, "AccessKey({id}, secret)"),
        }
    }
}

/// One AWS API's share of the stack.
#[async_trait]
pub trait Service: Send + Sync {
    /// The kinds this service observes, creates, updates and deletes.
    fn kinds(&self) -> &'static [Kind];

    /// The live resources of its kinds that carry the stack's tag.
    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, Error>;

    /// Creates the resource of a create (or a replacement's create) change,
    /// with the change's tags in the create call where AWS allows it.
    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, Error>;

    /// Applies changed attributes to the live resource `id`.
    async fn update(&self, change: &Change, id: &str, attrs: &[AttrChange]) -> Result<(), Error>;

    /// Deletes the live resource `id`, doing with its data what the
    /// change's [`crate::plan::DataOnDelete`] says; may return a note for
    /// the user (a snapshot kept).
    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, Error>;

    /// Checks a plan before anything changes, for what only AWS can tell
    /// (a bucket that still holds files). Nothing to check by default.
    async fn check(&self, _plan: &Plan) -> Result<(), Error> {
        Ok(())
    }
}

/// A call AWS (or the way there) failed, with what it was for.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {target}: {}", describe(source.as_ref()))]
pub struct CallError<S: ProvideErrorMetadata + std::error::Error + 'static> {
    pub action: &'static str,
    pub target: String,
    #[source]
    pub source: Box<S>,
}

impl<S: ProvideErrorMetadata + std::error::Error + 'static> CallError<S> {
    /// Turns an SDK error of one of service `S`'s operations into a
    /// `CallError`; for `map_err` (a module names `S` through a type alias).
    pub fn on<E, R>(
        action: &'static str,
        target: impl Into<String>,
    ) -> impl FnOnce(SdkError<E, R>) -> Self
    where
        S: From<SdkError<E, R>>,
    {
        let target = target.into();
        move |e| CallError {
            action,
            target,
            source: Box::new(e.into()),
        }
    }

    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        self.source.code()
    }

    pub fn message(&self) -> Option<&str> {
        self.source.message()
    }
}

/// "Code: message" when AWS said something; the whole chain otherwise
/// (e.g. a connection refused has no code).
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => causes(e),
    }
}

/// An error without an AWS code (no answer: connection, credentials,
/// timeout) as its chain of causes, most specific last, without the SDK's
/// debug dumps.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        // Wrappers often repeat their cause's text after their own.
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Whether live tags make a resource found by its name the stack's own.
pub fn is_ours(tags: &BTreeMap<String, String>, prefix: &str) -> bool {
    tags.get(STACK_TAG).map(String::as_str) == Some(prefix)
}

/// A resource found by its name that lacks the stack's tag: never taken over.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} {name} exists but is not part of stack {prefix} (it lacks the tag {STACK_TAG}={prefix}); {remedy}"
)]
pub struct NotOurs {
    pub what: &'static str,
    pub name: String,
    pub prefix: String,
    /// What the user can do about it.
    pub remedy: &'static str,
}

/// Refuses a resource found by its name unless it carries the stack's tag.
pub fn ours(
    tags: &BTreeMap<String, String>,
    prefix: &str,
    what: &'static str,
    name: &str,
    remedy: &'static str,
) -> Result<(), NotOurs> {
    if is_ours(tags, prefix) {
        return Ok(());
    }
    Err(NotOurs {
        what,
        name: name.to_string(),
        prefix: prefix.to_string(),
        remedy,
    })
}

/// Whether AWS may have done a call that failed this way: the answer was
/// lost on the way (timeout, dropped connection, unreadable) or AWS failed
/// after taking it (5xx other than throttling). For creates without an
/// idempotency token, which must not be resent blindly.
pub fn maybe_done<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            status >= 500 && !is_throttle(e.code())
        }
        _ => false,
    }
}

/// Whether an endpoint answered that it doesn't have the API at all:
/// LocalStack's community edition answers every call of a service it
/// lacks (RDS, SES v2) with InternalFailure "... not included in your
/// current license plan".
pub fn not_emulated(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("InternalFailure")
        && message.is_some_and(|m| m.contains("not included in your current license plan"))
}

/// AWS's throttling codes: not done, send again later.
pub fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled")
    )
}

/// The attribute a create needs and the plan didn't give: a bug in the
/// desired graph, reported rather than filled in with a default.
pub fn required<T>(value: Option<T>, change: &Change, attribute: &'static str) -> Result<T, Error> {
    value.ok_or_else(|| Error::MissingAttribute {
        address: change.address.clone(),
        attribute,
    })
}
