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

impl Goal {
    fn skips_final_snapshot(self) -> bool {
        matches!(self, Goal::Destroy(options) if options.skip_final_snapshot)
    }

    /// Whether a server that goes first leaves a snapshot of its disk: when
    /// the disk holds the database, unless destroy was told to keep none.
    pub fn keeps_server_disk(self, stack: &Stack) -> bool {
        stack.server_holds_database() && !self.skips_final_snapshot()
    }

    /// What becomes of the data the plan deletes, for the user to read
    /// before confirming: the database's final snapshot, or the disk of a
    /// server that holds the database.
    pub fn data_kept(self, plan: &Plan, stack: &Stack) -> Vec<&'static str> {
        let goes = |kind: Kind, actions: &[Action]| {
            plan.changes
                .iter()
                .any(|c| c.address.kind == kind && actions.contains(&c.action))
        };
        let mut notes = Vec::new();
        if matches!(self, Goal::Destroy(_)) && goes(Kind::Database, &[Action::Delete]) {
            notes.push(if self.skips_final_snapshot() {
                "The database is deleted WITHOUT a final snapshot (--skip-final-snapshot): its data is lost."
            } else {
                "The database keeps a final snapshot; --skip-final-snapshot deletes it without one."
            });
        }
        if stack.server_holds_database() && goes(Kind::Instance, &[Action::Delete, Action::Replace])
        {
            notes.push(match self {
                Goal::Destroy(_) if !self.keeps_server_disk(stack) => {
                    "The server's disk (the stack has no RDS database: Postgres lives there) is deleted WITHOUT a snapshot (--skip-final-snapshot)."
                }
                Goal::Destroy(_) => {
                    "The server's disk (the stack has no RDS database: Postgres lives there) keeps a snapshot; --skip-final-snapshot deletes it without one."
                }
                Goal::Converge => {
                    "The server's disk (the stack has no RDS database: Postgres lives there) keeps a snapshot before the server goes."
                }
            });
        }
        notes
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn plan_of(changes: &[(model::Address, Action)]) -> Plan {
        Plan {
            prefix: "demo".into(),
            region: "eu-central-1".into(),
            changes: changes
                .iter()
                .map(|(address, action)| plan::Change {
                    address: address.clone(),
                    action: *action,
                    name: String::new(),
                    id: None,
                    attrs: vec![],
                    tags: BTreeMap::new(),
                    depends_on: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn data_kept_says_what_each_goal_keeps() {
        let destroy = |skip| {
            Goal::Destroy(aws::DestroyOptions {
                skip_final_snapshot: skip,
                delete_bucket_contents: false,
            })
        };
        let with_rds = stack::test_stack("demo");
        let mut on_server = stack::test_stack("demo");
        on_server.database = None;
        let both_go = plan_of(&[
            (desired::database(), Action::Delete),
            (desired::instance(), Action::Delete),
        ]);
        // With RDS: the database's snapshot, and the server holds nothing.
        let notes = destroy(false).data_kept(&both_go, &with_rds);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("The database keeps a final snapshot"));
        assert!(destroy(true).data_kept(&both_go, &with_rds)[0].contains("WITHOUT"));
        assert!(!destroy(true).keeps_server_disk(&with_rds));
        // Postgres on the server: its disk is kept unless told otherwise.
        let server_goes = plan_of(&[(desired::instance(), Action::Delete)]);
        assert!(destroy(false).keeps_server_disk(&on_server));
        assert!(
            destroy(false).data_kept(&server_goes, &on_server)[0].contains("keeps a snapshot;")
        );
        assert!(!destroy(true).keeps_server_disk(&on_server));
        assert!(
            destroy(true).data_kept(&server_goes, &on_server)[0].contains("WITHOUT a snapshot")
        );
        let replaced = plan_of(&[(desired::instance(), Action::Replace)]);
        assert!(Goal::Converge.keeps_server_disk(&on_server));
        assert!(
            Goal::Converge.data_kept(&replaced, &on_server)[0].contains("before the server goes")
        );
        // Nothing goes: nothing to say.
        let updated = plan_of(&[(desired::instance(), Action::Update)]);
        assert!(Goal::Converge.data_kept(&updated, &on_server).is_empty());
    }
}
