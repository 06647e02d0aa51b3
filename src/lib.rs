//! ihp-infra: the AWS infrastructure an IHP app needs, reconciled from a
//! stack file against live AWS, without a state file.
//!
//! The data walks one way: stack file ([`stack`]) → desired resources
//! ([`desired`]) → observed live resources ([`aws`]) → [`plan::Plan`] →
//! [`executor`]. The plan is rendered by [`render`] and carried out by the
//! executor; neither changes it.

pub mod aws;
pub mod desired;
pub mod executor;
pub mod model;
pub mod plan;
pub mod regions;
pub mod render;
pub mod retry;
pub mod stack;

use aws::Aws;
use plan::{Plan, PlanError};
use stack::{Stack, StackError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Aws(#[from] aws::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// What a run should leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Everything the stack file describes, and nothing else of the stack.
    Converge,
    /// Nothing of the stack.
    Destroy,
}

/// Connects to AWS, observes the stack's live resources and plans.
pub async fn plan(stack: &Stack, goal: Goal) -> Result<(Aws, Plan), Error> {
    let aws = Aws::connect(&stack.prefix, &stack.region).await?;
    let observed = aws.observe().await?;
    let desired = desired::resources(stack);
    let plan = match goal {
        Goal::Converge => plan::reconcile(&stack.prefix, &stack.region, &desired, &observed)?,
        Goal::Destroy => plan::destroy(&stack.prefix, &stack.region, &desired, &observed)?,
    };
    Ok((aws, plan))
}
