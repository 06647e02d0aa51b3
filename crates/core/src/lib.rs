//! The core of ihp-infra, with no AWS SDK in it: the stack file
//! ([`stack`]), what a stack wants ([`desired`]), the shared vocabulary
//! ([`model`]), the plan as plain data ([`plan`]), the graph walk that
//! carries it out ([`executor`]) and how plans and outcomes are shown
//! ([`render`], [`json`]).
//!
//! The data walks one way: stack file → desired resources → observed live
//! resources (the binary's AWS services) → [`plan::Plan`] → executor. The
//! plan is rendered and carried out by different code; neither changes it.

pub mod adopt;
pub mod db_info;
pub mod desired;
pub mod executor;
pub mod graph;
pub mod handover;
pub mod init;
pub mod json;
pub mod mail;
pub mod model;
pub mod nixos;
pub mod outputs;
pub mod password;
pub mod plan;
pub mod policies;
pub mod redact;
pub mod regions;
pub mod render;
pub mod saved;
pub mod ssh;
pub mod stack;

use model::Kind;
use plan::{Action, DataOnDelete, DataPolicy, Plan};
use stack::Stack;

/// What a destroy may also throw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestroyOptions {
    pub skip_final_snapshot: bool,
    pub delete_bucket_contents: bool,
    /// destroy --delete-backups: the backups bucket goes too, emptied.
    pub delete_backups: bool,
}

/// What a run should leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Everything the stack file describes, and nothing else of the stack.
    Converge,
    /// Nothing of the stack.
    Destroy(DestroyOptions),
}

impl Goal {
    /// How this run treats the data it deletes.
    pub fn data_policy(self, stack: &Stack) -> DataPolicy {
        let options = match self {
            Goal::Destroy(options) => options,
            Goal::Converge => DestroyOptions::default(),
        };
        DataPolicy {
            skip_final_snapshot: options.skip_final_snapshot,
            delete_bucket_contents: options.delete_bucket_contents,
            delete_backups: options.delete_backups,
            server_holds_database: stack.server_holds_database(),
        }
    }

    /// Whether this run leaves the backups bucket alone: a destroy keeps
    /// it (and the dumps in it) unless told otherwise.
    pub fn keeps_backups(self) -> bool {
        matches!(self, Goal::Destroy(o) if !o.delete_backups)
    }

    /// What a destroy says of the backups bucket it keeps.
    pub fn backups_note(self, stack: &Stack) -> Option<String> {
        let backups = stack.backups.as_ref()?;
        match self {
            Goal::Destroy(o) if o.delete_backups => Some(format!(
                "The backups bucket {} is emptied and deleted (--delete-backups): every dump in it is lost.",
                backups.bucket
            )),
            Goal::Destroy(_) => Some(format!(
                "The backups bucket {} stays, with its dumps; --delete-backups deletes it too.",
                backups.bucket
            )),
            Goal::Converge => None,
        }
    }

    /// What becomes of the data the plan deletes, for the user to read
    /// before confirming: the database's final snapshot, or the disk of a
    /// server that holds the database. Read from the plan's
    /// [`DataOnDelete`]s.
    pub fn data_kept(self, plan: &Plan) -> Vec<&'static str> {
        let mut notes = Vec::new();
        let going = |kind: Kind| {
            plan.changes
                .iter()
                .filter(move |c| c.address.kind == kind)
                .filter(|c| matches!(c.action, Action::Delete | Action::Replace))
        };
        if matches!(self, Goal::Destroy(_))
            && let Some(db) = going(Kind::Database).find(|c| c.action == Action::Delete)
        {
            notes.push(if db.data_on_delete == Some(DataOnDelete::Lost) {
                "The database is deleted WITHOUT a final snapshot (--skip-final-snapshot): its data is lost."
            } else {
                "The database keeps a final snapshot; --skip-final-snapshot deletes it without one."
            });
        }
        let server_disk = going(Kind::Instance).find_map(|c| {
            c.data_on_delete
                .filter(|d| matches!(d, DataOnDelete::DiskSnapshot | DataOnDelete::Lost))
        });
        if let Some(disk) = server_disk {
            notes.push(match (self, disk) {
                (_, DataOnDelete::Lost) => {
                    "The server's disk (the stack has no RDS database: Postgres lives there) is deleted WITHOUT a snapshot (--skip-final-snapshot)."
                }
                (Goal::Destroy(_), _) => {
                    "The server's disk (the stack has no RDS database: Postgres lives there) keeps a snapshot; --skip-final-snapshot deletes it without one."
                }
                (Goal::Converge, _) => {
                    "The server's disk (the stack has no RDS database: Postgres lives there) keeps a snapshot before the server goes."
                }
            });
        }
        notes
    }
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
                    data_on_delete: None,
                    observed: model::Attrs::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn data_kept_says_what_each_goal_keeps() {
        let destroy = |skip| {
            Goal::Destroy(DestroyOptions {
                skip_final_snapshot: skip,
                delete_bucket_contents: false,
                delete_backups: false,
            })
        };
        let with_rds = stack::test_stack("demo");
        let mut on_server = stack::test_stack("demo");
        on_server.database = None;
        // The notes read the plan's data policy, as the goal sets it.
        let kept = |goal: Goal, stack: &Stack, changes: &[(model::Address, Action)]| {
            goal.data_kept(&plan_of(changes).with_data_policy(goal.data_policy(stack)))
        };
        let both_go = [
            (desired::database(), Action::Delete),
            (desired::instance(), Action::Delete),
        ];
        // With RDS: the database's snapshot, and the server holds nothing.
        let notes = kept(destroy(false), &with_rds, &both_go);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("The database keeps a final snapshot"));
        assert!(kept(destroy(true), &with_rds, &both_go)[0].contains("WITHOUT"));
        // Postgres on the server: its disk is kept unless told otherwise.
        let server_goes = [(desired::instance(), Action::Delete)];
        assert!(kept(destroy(false), &on_server, &server_goes)[0].contains("keeps a snapshot;"));
        assert!(kept(destroy(true), &on_server, &server_goes)[0].contains("WITHOUT a snapshot"));
        let replaced = [(desired::instance(), Action::Replace)];
        assert!(kept(Goal::Converge, &on_server, &replaced)[0].contains("before the server goes"));
        // Nothing goes: nothing to say.
        let updated = [(desired::instance(), Action::Update)];
        assert!(kept(Goal::Converge, &on_server, &updated).is_empty());
    }

    #[test]
    fn data_policy_follows_goal_flags_and_stack() {
        let with_rds = stack::test_stack("demo");
        let mut on_server = stack::test_stack("demo");
        on_server.database = None;
        let converge = Goal::Converge.data_policy(&with_rds);
        assert_eq!(
            converge.on_delete(Kind::Database),
            Some(DataOnDelete::FinalSnapshot)
        );
        assert_eq!(
            converge.on_delete(Kind::Bucket),
            Some(DataOnDelete::RefuseIfNotEmpty)
        );
        assert_eq!(
            converge.on_delete(Kind::Instance),
            None,
            "RDS holds the data"
        );
        assert_eq!(converge.on_delete(Kind::Vpc), None);
        let all_gone = Goal::Destroy(DestroyOptions {
            skip_final_snapshot: true,
            delete_bucket_contents: true,
            delete_backups: false,
        });
        let policy = all_gone.data_policy(&on_server);
        assert_eq!(policy.on_delete(Kind::Database), Some(DataOnDelete::Lost));
        assert_eq!(policy.on_delete(Kind::Instance), Some(DataOnDelete::Lost));
        assert_eq!(
            policy.on_delete(Kind::Bucket),
            Some(DataOnDelete::EmptyFirst)
        );
        assert_eq!(
            Goal::Converge
                .data_policy(&on_server)
                .on_delete(Kind::Instance),
            Some(DataOnDelete::DiskSnapshot)
        );
    }
}
