//! ihp-infra: the AWS infrastructure an IHP app needs, reconciled from a
//! stack file against live AWS, without a state file.
//!
//! The data walks one way: stack file ([`stack`]) → desired resources
//! ([`desired`]) → observed live resources ([`aws`]) → [`plan::Plan`] →
//! [`executor`]. The plan is rendered by [`render`] and carried out by the
//! executor; neither changes it.

pub mod aws;
pub mod db_info;
pub mod desired;
pub mod executor;
pub mod init;
pub mod json;
pub mod model;
pub mod outputs;
pub mod password;
pub mod plan;
pub mod policies;
pub mod redact;
pub mod regions;
pub mod render;
pub mod retry;
pub mod session;
pub mod stack;

use aws::Aws;
use model::Kind;
use plan::{Action, Plan, PlanError};
use stack::{Stack, StackError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Aws(#[from] aws::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the server or the database is missing after apply; run `ihp-infra plan` to see why")]
    Incomplete,
    #[error("failed to write {}: {source}", path.display())]
    DbInfo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<aws::lock::Error> for Error {
    fn from(e: aws::lock::Error) -> Self {
        Error::Aws(e.into())
    }
}

impl Error {
    /// What to do next, when AWS's error code says.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Aws(e) => e.hint(),
            _ => None,
        }
    }
}

/// What a run should leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Everything the stack file describes, and nothing else of the stack.
    Converge,
    /// Nothing of the stack.
    Destroy(aws::DestroyOptions),
}

/// Connects to AWS, observes the stack's live resources and plans.
pub async fn plan(
    stack: &Stack,
    goal: Goal,
    settings: &aws::Settings,
) -> Result<(Aws, Plan), Error> {
    let aws = Aws::connect_for(stack, settings, goal).await?;
    let plan = plan_with(&aws, stack, goal).await?;
    Ok((aws, plan))
}

/// Observes the stack's live resources through `aws` (connected for this
/// `goal`) and plans.
pub async fn plan_with(aws: &Aws, stack: &Stack, goal: Goal) -> Result<Plan, Error> {
    let observed = aws.observe().await?;
    let plan = match goal {
        Goal::Converge => {
            let facts = aws.facts(stack, &observed).await?;
            let desired = desired::resources(stack, &facts);
            let plan = plan::reconcile(&stack.prefix, &stack.region, &desired, &observed)?;
            let launches = plan.changes.iter().any(|c| {
                c.address == desired::instance()
                    && matches!(c.action, Action::Create | Action::Replace)
            });
            if launches && facts.image.is_none() {
                return Err(aws::Error::from(aws::ec2::Ec2::no_image(
                    &facts.image_choice,
                    &stack.region,
                ))
                .into());
            }
            plan
        }
        Goal::Destroy(_) => {
            // Destroy needs only the graph's shape, not what a create would use.
            let facts = desired::Facts {
                image: None,
                image_choice: String::new(),
                password_hash: String::new(),
                arns: aws.arns.clone(),
            };
            plan::destroy(
                &stack.prefix,
                &stack.region,
                &desired::resources(stack, &facts),
                &observed,
            )?
        }
    };
    // A bucket with files is never emptied unasked: stop before changing
    // anything rather than half-way.
    for c in &plan.changes {
        if c.address.kind == Kind::Bucket
            && matches!(c.action, Action::Delete | Action::Replace)
            && let Some(bucket) = &c.id
        {
            aws.s3
                .check_deletable(bucket)
                .await
                .map_err(aws::Error::from)?;
        }
    }
    Ok(plan)
}
