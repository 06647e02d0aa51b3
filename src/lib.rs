//! ihp-infra: the AWS infrastructure an IHP app needs, reconciled from a
//! stack file against live AWS, without a state file.
//!
//! The data walks one way: stack file ([`stack`]) → desired resources
//! ([`desired`]) → observed live resources ([`aws`]) → [`plan::Plan`] →
//! [`executor`]. The plan is rendered by [`render`] and carried out by the
//! executor; neither changes it.

pub mod adoption;
pub mod aws;
pub mod retry;
pub mod session;
pub mod ssh_config;

// The core crate's modules, under the names the whole crate uses.
pub use ihp_infra_core::{
    DestroyOptions, Goal, adopt, db_info, desired, executor, graph, handover, init, json, mail,
    model, nixos, outputs, password, plan, policies, redact, regions, render, saved, ssh, stack,
};

use aws::Aws;
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
    #[error(transparent)]
    KeyFile(#[from] session::KeyFileError),
    #[error(transparent)]
    Ssh(#[from] ssh_config::Error),
    #[error(transparent)]
    Adopt(#[from] adoption::Error),
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

/// Connects to AWS, observes the stack's live resources and plans.
pub async fn plan(
    stack: &Stack,
    goal: Goal,
    settings: &aws::Settings,
) -> Result<(Aws, Plan), Error> {
    plan_with_replacements(stack, goal, settings, &[]).await
}

/// [`plan`], with `--replace` addresses.
pub async fn plan_with_replacements(
    stack: &Stack,
    goal: Goal,
    settings: &aws::Settings,
    replacing: &[model::Address],
) -> Result<(Aws, Plan), Error> {
    let aws = Aws::connect(stack, settings).await?;
    let plan = plan_replacing(&aws, stack, goal, replacing).await?;
    Ok((aws, plan))
}

/// Checks `--replace` addresses against what the stack has, before any AWS
/// call: each must be a resource the stack file asks for.
pub fn check_replacements(stack: &Stack, replacing: &[model::Address]) -> Result<(), String> {
    let graph = desired::graph(
        stack,
        &desired::Facts::unknown(policies::Arns {
            partition: "aws".into(),
            account: String::new(),
            region: stack.region.clone(),
        }),
    );
    for address in replacing {
        if !graph.wanted.iter().any(|d| &d.address == address) {
            return Err(format!(
                "--replace {address}: the stack has no such resource; it has {}",
                graph
                    .wanted
                    .iter()
                    .map(|d| d.address.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// Observes the stack's live resources through `aws` and plans for `goal`.
pub async fn plan_with(aws: &Aws, stack: &Stack, goal: Goal) -> Result<Plan, Error> {
    plan_replacing(aws, stack, goal, &[]).await
}

/// [`plan_with`], replacing the live resources at `replacing` whether or
/// not anything forces it (`--replace`).
pub async fn plan_replacing(
    aws: &Aws,
    stack: &Stack,
    goal: Goal,
    replacing: &[model::Address],
) -> Result<Plan, Error> {
    // What to look for needs names only, not what a create would use.
    let shape = desired::graph(stack, &desired::Facts::unknown(aws.arns.clone()));
    let mut observed = aws.observe(&aws::Wanted { graph: &shape }).await?;
    // The dumps in a backups bucket outlive the stack's other choices: a
    // converge never deletes one (backups turned off, or renamed), and
    // destroy only with --delete-backups.
    let is_backups = |o: &model::Observed| {
        desired::is_backups_bucket(
            &o.address,
            o.tags.get("Name").map(String::as_str),
            &stack.prefix,
        )
    };
    observed.retain(|o| match goal {
        Goal::Converge => {
            !is_backups(o) || (stack.backups.is_some() && o.address == desired::backups_bucket())
        }
        Goal::Destroy(_) => !(goal.keeps_backups() && is_backups(o)),
    });
    let plan = match goal {
        Goal::Converge => {
            let facts = aws.facts(stack, &observed).await?;
            aws.mark_key_secrets(&facts, &mut observed);
            let desired = desired::resources(stack, &facts);
            let plan = plan::reconcile_replacing(
                &stack.prefix,
                &stack.region,
                &desired,
                &observed,
                replacing,
            )?;
            let launches = plan.changes.iter().any(|c| {
                c.address == desired::instance()
                    && matches!(c.action, Action::Create | Action::Replace)
            });
            if launches && facts.image.is_none() {
                return Err(Aws::no_image(&facts, &stack.region).into());
            }
            plan
        }
        Goal::Destroy(_) => plan::destroy(&stack.prefix, &stack.region, &shape.wanted, &observed)?,
    }
    .with_data_policy(goal.data_policy(stack));
    // What only AWS can tell (a bucket that still holds files) stops the
    // run before anything changes rather than half-way.
    aws.check(&plan).await?;
    Ok(plan)
}
