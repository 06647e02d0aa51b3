//! Desired against observed: the plan, as plain data.
//!
//! Nothing here talks to AWS. The plan is rendered by `render` and carried
//! out by `executor`; both only read it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::model::{
    Address, Attrs, Desired, Item, Kind, Mutability, Observed, Peer, Ref, Rule, Value,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

/// One attribute that differs: its live value (none when creating) and the
/// value it will have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrChange {
    pub name: &'static str,
    pub before: Option<Value>,
    pub after: Value,
    pub forces_replacement: bool,
}

impl AttrChange {
    /// For set values: the items to add and to remove.
    pub fn set_delta(&self) -> (BTreeSet<Item>, BTreeSet<Item>) {
        let empty = BTreeSet::new();
        let before = match &self.before {
            Some(Value::Set(s)) => s,
            _ => &empty,
        };
        let after = match &self.after {
            Value::Set(s) => s,
            _ => &empty,
        };
        (
            after.difference(before).cloned().collect(),
            before.difference(after).cloned().collect(),
        )
    }

    /// For a `tags` change: the tags to set (new ones and new values; tags
    /// the stack no longer sets are left alone, as plan shows).
    pub fn added_tags(&self) -> BTreeMap<String, String> {
        self.set_delta()
            .0
            .into_iter()
            .filter_map(|item| match item {
                Item::Tag(k, v) => Some((k, v)),
                _ => None,
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    /// `Name` tag: the desired one, or the live one for deletes.
    pub name: String,
    /// Live id, when the resource exists.
    pub id: Option<String>,
    /// Changed attributes (every attribute for a create; none for a delete).
    pub attrs: Vec<AttrChange>,
    /// Tags to create with, or to set on the live resource.
    pub tags: BTreeMap<String, String>,
    /// Addresses this one needs (creates) or that need it (deletes, reversed).
    pub depends_on: Vec<Address>,
    /// What a delete (or a replacement's delete) does with the data the
    /// resource holds; none for resources that hold no data of the user's.
    pub data_on_delete: Option<DataOnDelete>,
    /// The live attributes of a resource that exists: what a delete (or a
    /// replacement's delete) finds it by besides its id (an access key's user).
    pub observed: Attrs,
}

/// What a delete does with the data the resource holds: decided when the
/// plan is made (from the goal and the flags), shown with it, and read by
/// the service that deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataOnDelete {
    /// The database leaves a final snapshot.
    FinalSnapshot,
    /// A server whose disk holds Postgres (the stack has no RDS database)
    /// leaves a snapshot of its disk.
    DiskSnapshot,
    /// Deleted without a snapshot (destroy --skip-final-snapshot): the
    /// data is lost.
    Lost,
    /// A bucket that still holds files is refused before anything changes.
    RefuseIfNotEmpty,
    /// The bucket's files are deleted first (destroy --delete-bucket-contents).
    EmptyFirst,
}

impl DataOnDelete {
    /// For people: what happens to the data.
    pub fn describe(self) -> &'static str {
        match self {
            DataOnDelete::FinalSnapshot => "a final snapshot is kept",
            DataOnDelete::DiskSnapshot => "a snapshot of the disk is kept",
            DataOnDelete::Lost => "deleted without a snapshot",
            DataOnDelete::RefuseIfNotEmpty => "refused if it holds files",
            DataOnDelete::EmptyFirst => "its files are deleted first",
        }
    }
}

/// How a run treats data it deletes (see [`Plan::with_data_policy`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPolicy {
    /// destroy --skip-final-snapshot.
    pub skip_final_snapshot: bool,
    /// destroy --delete-bucket-contents.
    pub delete_bucket_contents: bool,
    /// destroy --delete-backups: the backups bucket is emptied first.
    pub delete_backups: bool,
    /// The stack has no RDS database: Postgres lives on the server's disk.
    pub server_holds_database: bool,
}

impl DataPolicy {
    /// What deleting a resource of `kind` does with its data.
    pub fn on_delete(self, kind: Kind) -> Option<DataOnDelete> {
        let snapshot = |kept| {
            if self.skip_final_snapshot {
                DataOnDelete::Lost
            } else {
                kept
            }
        };
        match kind {
            Kind::Database => Some(snapshot(DataOnDelete::FinalSnapshot)),
            Kind::Instance if self.server_holds_database => {
                Some(snapshot(DataOnDelete::DiskSnapshot))
            }
            Kind::Bucket if self.delete_bucket_contents => Some(DataOnDelete::EmptyFirst),
            Kind::Bucket => Some(DataOnDelete::RefuseIfNotEmpty),
            _ => None,
        }
    }
}

/// Whether a change is about the stack's backups bucket (its `name` is the
/// live Name tag for deletes).
pub fn is_backups_bucket(c: &Change, prefix: &str) -> bool {
    crate::desired::is_backups_bucket(&c.address, Some(&c.name), prefix)
}

impl Change {
    /// The full desired attribute set, for create calls.
    pub fn desired_attrs(&self) -> Attrs {
        Attrs(
            self.attrs
                .iter()
                .map(|a| (a.name, a.after.clone()))
                .collect(),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub prefix: String,
    pub region: String,
    pub changes: Vec<Change>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Plan {
    /// The plan with what each delete does with its data set by `policy`.
    pub fn with_data_policy(mut self, policy: DataPolicy) -> Plan {
        for c in &mut self.changes {
            let backups = is_backups_bucket(c, &self.prefix);
            c.data_on_delete = match c.action {
                Action::Delete if backups && policy.delete_backups => {
                    Some(DataOnDelete::EmptyFirst)
                }
                // Only --delete-backups empties the backups bucket.
                Action::Delete if backups => Some(DataOnDelete::RefuseIfNotEmpty),
                Action::Delete | Action::Replace => policy.on_delete(c.address.kind),
                _ => None,
            };
        }
        self
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::NoOp => s.unchanged += 1,
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    /// What this plan would lose that the stack file doesn't say outright,
    /// each with the apply flag that lets it go ahead:
    /// - the database replaced (its username, the network under it): the new
    ///   one starts empty, the data stays only in the old one's snapshot;
    /// - the server replaced while the stack has no RDS database: Postgres
    ///   then lives on the server's disk, and the new server starts without
    ///   it (the old disk is kept only as a snapshot).
    ///
    /// Deletes are what destroy and `enabled: false` say outright (and the
    /// database keeps a final snapshot).
    pub fn risks(&self) -> Vec<PlanError> {
        let forced = |c: &Change| {
            c.attrs
                .iter()
                .filter(|a| a.forces_replacement && a.before.as_ref() != Some(&a.after))
                .map(|a| a.name)
                .collect()
        };
        let replaced = |kind| {
            self.changes
                .iter()
                .find(move |c| c.address.kind == kind && c.action == Action::Replace)
        };
        let has_database = self
            .changes
            .iter()
            .any(|c| c.address.kind == Kind::Database && c.action != Action::Delete);
        let mut risks = Vec::new();
        if let Some(c) = replaced(Kind::Database) {
            risks.push(PlanError::ReplacesDatabase {
                name: c.name.clone(),
                id: c.id.clone(),
                because: forced(c),
            });
        }
        if let Some(c) = replaced(Kind::Instance)
            && !has_database
        {
            risks.push(PlanError::ReplacesServer {
                name: c.name.clone(),
                id: c.id.clone(),
                because: forced(c),
            });
        }
        risks
    }

    /// Whether this plan may be carried out with these apply flags (see
    /// [`Plan::risks`]): the first risk no flag allows, even with
    /// --auto-approve.
    pub fn allowed(&self, flags: &[&str]) -> Result<(), PlanError> {
        match self
            .risks()
            .into_iter()
            .find(|r| !r.flag().is_some_and(|f| flags.contains(&f)))
        {
            Some(risk) => Err(risk),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "found two resources for {address} tagged with stack {prefix}: {first} and {second}; \
         ihp-infra will not guess which one is the stack's. Delete the one that should not exist, \
         or remove its ihp-infra:stack tag, and run again"
    )]
    Duplicate {
        address: Address,
        prefix: String,
        first: String,
        second: String,
    },
    #[error(
        "the plan replaces the database {name}{} because {} changes: the new database \
         starts empty and the old one's data stays only in its final snapshot\n  \
         to go ahead, apply with --replace-database; to keep the database, undo that change \
         in the stack file",
        id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default(),
        because.join(", ")
    )]
    ReplacesDatabase {
        name: String,
        id: Option<String>,
        because: Vec<&'static str>,
    },
    #[error(
        "the plan replaces the server {name}{} because {} changes: the stack has no RDS \
         database, so Postgres lives on the server's disk: the new server starts without \
         that data, which stays only in a snapshot of the old disk\n  \
         to go ahead, apply with --replace-server; to keep the server, undo that change in \
         the stack file",
        id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default(),
        because.join(", ")
    )]
    ReplacesServer {
        name: String,
        id: Option<String>,
        because: Vec<&'static str>,
    },
    #[error("cannot change {attribute} of {address} from {live} to {wanted}: {why}")]
    Refused {
        address: Address,
        attribute: &'static str,
        live: String,
        wanted: String,
        why: &'static str,
    },
}

impl PlanError {
    /// The apply flag that lets this risk go ahead, if it is one.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            PlanError::ReplacesDatabase { .. } => Some("--replace-database"),
            PlanError::ReplacesServer { .. } => Some("--replace-server"),
            _ => None,
        }
    }
}

/// Whether the live value differs from the desired one.
fn differs(live: &Value, want: &Value) -> bool {
    match (live, want) {
        (Value::Text(live), Value::AtLeastVersion(want)) => {
            !crate::model::version_meets(live, want)
        }
        _ => live != want,
    }
}

/// Changes AWS can't make, refused at plan time rather than failing half-way.
fn refuse(
    address: &Address,
    attr: &crate::model::Attr,
    live: &Value,
    want: &Value,
) -> Result<(), PlanError> {
    let refused = |why| PlanError::Refused {
        address: address.clone(),
        attribute: attr.name,
        live: live.to_string(),
        wanted: want.to_string(),
        why,
    };
    match (attr.mutability, live, want) {
        (Mutability::GrowOnly, Value::Int(l), Value::Int(w)) if w < l => {
            Err(refused("AWS can grow storage but never shrink it"))
        }
        (_, Value::Text(l), Value::AtLeastVersion(w)) => {
            let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u64>().ok());
            if major(l) > major(w) {
                Err(refused("AWS can't downgrade a database's major version"))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Indexes live resources by address; two for one address is an error.
fn index(prefix: &str, observed: &[Observed]) -> Result<BTreeMap<Address, Observed>, PlanError> {
    let mut by_address: BTreeMap<Address, Observed> = BTreeMap::new();
    for o in observed {
        if let Some(first) = by_address.get(&o.address) {
            let (a, b) = if first.id <= o.id {
                (&first.id, &o.id)
            } else {
                (&o.id, &first.id)
            };
            return Err(PlanError::Duplicate {
                address: o.address.clone(),
                prefix: prefix.to_string(),
                first: a.clone(),
                second: b.clone(),
            });
        }
        by_address.insert(o.address.clone(), o.clone());
    }
    Ok(by_address)
}

/// Plans the changes that make `observed` look like `desired`. `desired`
/// lists dependencies before dependents.
pub fn reconcile(
    prefix: &str,
    region: &str,
    desired: &[Desired],
    observed: &[Observed],
) -> Result<Plan, PlanError> {
    reconcile_replacing(prefix, region, desired, observed, &[])
}

/// [`reconcile`], with the live resources at `replacing` replaced even where
/// nothing forces it (`apply --replace`: a server onto a newer image).
pub fn reconcile_replacing(
    prefix: &str,
    region: &str,
    desired: &[Desired],
    observed: &[Observed],
    replacing: &[Address],
) -> Result<Plan, PlanError> {
    let mut live = index(prefix, observed)?;
    // The id a dependent may use: known when the dependency stays in place.
    let mut stable_ids: HashMap<Address, String> = HashMap::new();
    let mut changes = Vec::new();

    for want in desired {
        let resolved: Vec<(&crate::model::Attr, Value)> = want
            .attrs
            .iter()
            .map(|a| (a, resolve(&a.value, &stable_ids)))
            .collect();
        let change = match live.remove(&want.address) {
            None => Change {
                address: want.address.clone(),
                action: Action::Create,
                name: want.name().to_string(),
                id: None,
                attrs: resolved
                    .into_iter()
                    .map(|(a, after)| AttrChange {
                        name: a.name,
                        before: None,
                        after,
                        forces_replacement: false,
                    })
                    .collect(),
                tags: want.tags.clone(),
                depends_on: want.depends_on.clone(),
                data_on_delete: None,
                observed: Attrs::default(),
            },
            Some(have) => {
                let mut attrs = Vec::new();
                for (a, after) in &resolved {
                    if a.mutability == Mutability::CreateOnly {
                        continue;
                    }
                    let before = have.attrs.get(a.name).cloned().unwrap_or(Value::None);
                    if differs(&before, after) {
                        refuse(&want.address, a, &before, after)?;
                        attrs.push(AttrChange {
                            name: a.name,
                            before: Some(before),
                            after: after.clone(),
                            forces_replacement: a.mutability == Mutability::ForcesReplacement,
                        });
                    }
                }
                let replace =
                    attrs.iter().any(|a| a.forces_replacement) || replacing.contains(&want.address);
                if !replace
                    && want.address.kind.carries_tags()
                    && let Some(tags) = tag_change(&want.tags, &have.tags)
                {
                    attrs.push(tags);
                }
                let action = if replace {
                    // A replacement is created from scratch: it needs every attribute.
                    attrs = resolved
                        .into_iter()
                        .map(|(a, after)| {
                            let before = have.attrs.get(a.name).cloned().unwrap_or(Value::None);
                            AttrChange {
                                name: a.name,
                                forces_replacement: differs(&before, &after)
                                    && a.mutability == Mutability::ForcesReplacement,
                                before: Some(before),
                                after,
                            }
                        })
                        .collect();
                    Action::Replace
                } else if attrs.is_empty() {
                    Action::NoOp
                } else {
                    Action::Update
                };
                if matches!(action, Action::NoOp | Action::Update) {
                    stable_ids.insert(want.address.clone(), have.id.clone());
                }
                Change {
                    address: want.address.clone(),
                    action,
                    name: want.name().to_string(),
                    id: Some(have.id),
                    attrs,
                    tags: want.tags.clone(),
                    depends_on: want.depends_on.clone(),
                    data_on_delete: None,
                    observed: Attrs(have.attrs.clone()),
                }
            }
        };
        tracing::debug!(address = %change.address, action = ?change.action, "planned");
        changes.push(change);
    }

    // Whatever carries the stack's tag but is not wanted goes.
    for (_, have) in live {
        changes.push(delete_change(have, desired));
    }
    Ok(Plan {
        prefix: prefix.to_string(),
        region: region.to_string(),
        changes,
    })
}

/// Plans deleting every live resource of the stack.
pub fn destroy(
    prefix: &str,
    region: &str,
    desired: &[Desired],
    observed: &[Observed],
) -> Result<Plan, PlanError> {
    let live = index(prefix, observed)?;
    // Dependents first, in the order the stack would create them, reversed.
    let mut ordered: Vec<Observed> = live.into_values().collect();
    let position = |o: &Observed| {
        desired
            .iter()
            .position(|d| d.address == o.address)
            .unwrap_or(usize::MAX)
    };
    ordered.sort_by_key(|o| std::cmp::Reverse((position(o), o.address.clone())));
    Ok(Plan {
        prefix: prefix.to_string(),
        region: region.to_string(),
        changes: ordered
            .into_iter()
            .map(|o| delete_change(o, desired))
            .collect(),
    })
}

fn delete_change(have: Observed, desired: &[Desired]) -> Change {
    let depends_on = desired
        .iter()
        .find(|d| d.address == have.address)
        .map(|d| d.depends_on.clone())
        .unwrap_or_default();
    Change {
        name: have.tags.get("Name").cloned().unwrap_or_default(),
        address: have.address,
        action: Action::Delete,
        id: Some(have.id),
        attrs: Vec::new(),
        tags: have.tags,
        depends_on,
        data_on_delete: None,
        observed: Attrs(have.attrs),
    }
}

/// Only the tags the stack sets are compared: tags others add are theirs.
fn tag_change(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Option<AttrChange> {
    let want_items: BTreeSet<Item> = want
        .iter()
        .map(|(k, v)| Item::Tag(k.clone(), v.clone()))
        .collect();
    let have_items: BTreeSet<Item> = have
        .iter()
        .filter(|(k, _)| want.contains_key(*k))
        .map(|(k, v)| Item::Tag(k.clone(), v.clone()))
        .collect();
    (want_items != have_items).then_some(AttrChange {
        name: "tags",
        before: Some(Value::Set(have_items)),
        after: Value::Set(want_items),
        forces_replacement: false,
    })
}

/// Replaces references to resources that stay in place by their ids.
pub fn resolve(value: &Value, ids: &HashMap<Address, String>) -> Value {
    let r = |r: &Ref| match r {
        Ref::Pending(addr) => ids
            .get(addr)
            .map(|id| Ref::Id(id.clone()))
            .unwrap_or_else(|| r.clone()),
        Ref::Id(_) => r.clone(),
    };
    match value {
        Value::Ref(x) => Value::Ref(r(x)),
        Value::Set(items) => Value::Set(
            items
                .iter()
                .map(|item| match item {
                    Item::Rule(rule) => Item::Rule(Rule {
                        peer: match &rule.peer {
                            Peer::Group(g) => Peer::Group(r(g)),
                            other => other.clone(),
                        },
                        ..rule.clone()
                    }),
                    Item::Route {
                        destination,
                        gateway,
                    } => Item::Route {
                        destination: destination.clone(),
                        gateway: r(gateway),
                    },
                    Item::Subnet(s) => Item::Subnet(r(s)),
                    Item::Group(g) => Item::Group(r(g)),
                    Item::Policy(p) => Item::Policy(r(p)),
                    Item::Role(x) => Item::Role(r(x)),
                    Item::Tag(..) => item.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether a value still refers to something not yet created.
pub fn has_pending(value: &Value) -> bool {
    let pending = |r: &Ref| matches!(r, Ref::Pending(_));
    match value {
        Value::Ref(r) => pending(r),
        Value::Set(items) => items.iter().any(|i| match i {
            Item::Rule(rule) => matches!(&rule.peer, Peer::Group(g) if pending(g)),
            Item::Route { gateway, .. } => pending(gateway),
            Item::Subnet(s) | Item::Group(s) | Item::Policy(s) | Item::Role(s) => pending(s),
            Item::Tag(..) => false,
        }),
        _ => false,
    }
}

/// What AWS would show after a successful apply of `desired`, with ids
/// made up by `id` (from the position and the address). For unit tests.
#[cfg(test)]
pub fn converged(desired: &[Desired], id: impl Fn(usize, &Address) -> String) -> Vec<Observed> {
    let mut ids = HashMap::new();
    desired
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let id = id(i, &d.address);
            let attrs = d
                .attrs
                .iter()
                .map(|a| (a.name, resolve(&a.value, &ids)))
                .collect();
            ids.insert(d.address.clone(), id.clone());
            Observed {
                address: d.address.clone(),
                id,
                // As AWS shows them: a kind without tags has none.
                tags: if d.address.kind.carries_tags() {
                    d.tags.clone()
                } else {
                    BTreeMap::new()
                },
                attrs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{self, resources};
    use crate::model::Kind;
    use crate::stack::Stack;

    fn stack() -> Stack {
        crate::stack::test_stack("demo")
    }

    fn converged(desired: &[Desired]) -> Vec<Observed> {
        super::converged(desired, |i, a| format!("{}-{i:04}", a.kind))
    }

    fn action_of(plan: &Plan, address: &Address) -> Action {
        plan.changes
            .iter()
            .find(|c| &c.address == address)
            .unwrap()
            .action
    }

    #[test]
    fn empty_account_creates_everything() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let plan = reconcile("demo", "eu-central-1", &want, &[]).unwrap();
        assert_eq!(plan.summary().create, want.len());
        assert!(plan.changes.iter().all(|c| c.action == Action::Create));
        // References to resources not created yet stay pending.
        let subnet = &plan.changes[2];
        assert_eq!(
            subnet.attrs[0].after,
            Value::Ref(Ref::Pending(desired::vpc()))
        );
    }

    #[test]
    fn converged_account_is_a_no_op() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let plan = reconcile("demo", "eu-central-1", &want, &converged(&want)).unwrap();
        assert!(!plan.has_changes(), "{plan:#?}");
    }

    #[test]
    fn attribute_drift_is_an_in_place_update() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = converged(&want);
        live[0]
            .attrs
            .insert("enable_dns_hostnames", Value::Bool(false));
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        let vpc = &plan.changes[0];
        assert_eq!(vpc.action, Action::Update);
        assert_eq!(vpc.attrs.len(), 1);
        assert_eq!(vpc.attrs[0].name, "enable_dns_hostnames");
        assert_eq!(vpc.attrs[0].before, Some(Value::Bool(false)));
        assert_eq!(plan.summary().update, 1);
    }

    #[test]
    fn extra_rule_shows_as_set_delta() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = converged(&want);
        let app = live
            .iter_mut()
            .find(|o| o.address == desired::app_security_group())
            .unwrap();
        let Some(Value::Set(ingress)) = app.attrs.get_mut("ingress") else {
            panic!()
        };
        let extra = Item::Rule(Rule::tcp(8080, Peer::Cidr("0.0.0.0/0".into())));
        ingress.insert(extra.clone());
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        let change = plan
            .changes
            .iter()
            .find(|c| c.address == desired::app_security_group())
            .unwrap();
        assert_eq!(change.action, Action::Update);
        let (added, removed) = change.attrs[0].set_delta();
        assert!(added.is_empty());
        assert_eq!(removed, BTreeSet::from([extra]));
    }

    #[test]
    fn access_key_without_tags_is_converged() {
        // Regression: AWS keeps no tags on an access key, and every plan of a
        // stack with `storage.access_key` wanted to set them.
        let mut s = stack();
        s.storage.access_key = true;
        let want = resources(&s, &crate::desired::test_facts());
        let live = converged(&want);
        let key = live
            .iter()
            .find(|o| o.address == desired::access_key())
            .unwrap();
        assert!(key.tags.is_empty());
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert!(!plan.has_changes(), "{plan:?}");
    }

    #[test]
    fn database_replaced_by_an_edit_needs_replace_database() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let live = with_live(
            &want,
            desired::database(),
            "username",
            Value::Text("someone_else".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::database()), Action::Replace);
        let refused = plan.allowed(&[]).unwrap_err();
        assert!(
            matches!(&refused, PlanError::ReplacesDatabase { because, .. } if because == &["username"]),
            "{refused:?}"
        );
        let text = refused.to_string();
        assert!(
            text.starts_with("the plan replaces the database demo-postgres-db (database-0020) because username changes"),
            "{text}"
        );
        assert!(text.contains("--replace-database"), "{text}");
        assert_eq!(plan.allowed(&["--replace-database"]), Ok(()));
    }

    #[test]
    fn server_replaced_without_a_database_needs_replace_server() {
        // appWithPostgres: the data is on the server's disk.
        let mut s = stack();
        s.database = None;
        let want = resources(&s, &crate::desired::test_facts());
        let old_key = || Value::Text("old-key".into());
        let live = with_live(&want, desired::instance(), "key_name", old_key());
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        let refused = plan.allowed(&["--replace-database"]).unwrap_err();
        assert!(
            matches!(&refused, PlanError::ReplacesServer { because, .. } if because == &["key_name"]),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("apply with --replace-server"));
        assert_eq!(refused.flag(), Some("--replace-server"));
        assert_eq!(plan.allowed(&["--replace-server"]), Ok(()));
        // Also while the database is being deleted (`enabled: false`).
        let with_database = resources(&stack(), &crate::desired::test_facts());
        let live = with_live(&with_database, desired::instance(), "key_name", old_key());
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::database()), Action::Delete);
        assert!(plan.allowed(&[]).is_err());
    }

    #[test]
    fn database_created_updated_or_deleted_needs_no_flag() {
        let want = resources(&stack(), &crate::desired::test_facts());
        // Created.
        let plan = reconcile("demo", "eu-central-1", &want, &[]).unwrap();
        assert_eq!(plan.allowed(&[]), Ok(()));
        // Deleted (destroy, or `enabled: false`): a final snapshot is kept.
        let live = converged(&want);
        let plan = reconcile("demo", "eu-central-1", &[], &live).unwrap();
        assert_eq!(action_of(&plan, &desired::database()), Action::Delete);
        assert_eq!(plan.allowed(&[]), Ok(()));
        // Another resource replaced: only the database's data is guarded.
        let live = with_live(
            &want,
            desired::instance(),
            "key_name",
            Value::Text("old-key".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::instance()), Action::Replace);
        assert_eq!(plan.allowed(&[]), Ok(()));
    }

    #[test]
    fn cidr_change_replaces_subnet_and_updates_association() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = converged(&want);
        let public = live
            .iter_mut()
            .find(|o| o.address == desired::public_subnet())
            .unwrap();
        public
            .attrs
            .insert("cidr_block", Value::Text("10.0.9.0/24".into()));
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::public_subnet()), Action::Replace);
        // The route table stays, but its association moves to the new subnet.
        assert_eq!(
            action_of(&plan, &desired::public_route_table()),
            Action::Update
        );
        let replaced = plan
            .changes
            .iter()
            .find(|c| c.address == desired::public_subnet())
            .unwrap();
        let forcing: Vec<_> = replaced
            .attrs
            .iter()
            .filter(|a| a.forces_replacement)
            .map(|a| a.name)
            .collect();
        assert_eq!(forcing, ["cidr_block"]);
        // The replacement's delete knows the live resource, as a plain
        // delete does (regression: it carried no live attributes).
        assert_eq!(replaced.observed.text("cidr_block"), Some("10.0.9.0/24"));
        // The server lives in that subnet: it is replaced with it.
        assert_eq!(action_of(&plan, &desired::instance()), Action::Replace);
        assert_eq!(plan.summary().replace, 2);
    }

    #[test]
    fn vpc_replacement_cascades_to_everything_inside() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = converged(&want);
        live[0]
            .attrs
            .insert("cidr_block", Value::Text("10.1.0.0/16".into()));
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        for c in &plan.changes {
            let expected = match c.address.kind {
                // Moved to the new gateway and server.
                Kind::InternetGateway | Kind::ElasticIp => Action::Update,
                // Outside the VPC: untouched.
                Kind::Bucket
                | Kind::LogGroup
                | Kind::IamPolicy
                | Kind::IamRole
                | Kind::InstanceProfile
                | Kind::IamUser
                | Kind::AccessKey
                | Kind::Parameter => Action::NoOp,
                _ => Action::Replace,
            };
            assert_eq!(c.action, expected, "{}", c.address);
        }
    }

    #[test]
    fn unwanted_tagged_resource_is_deleted() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = converged(&want);
        live.push(Observed {
            address: Address::new(Kind::Subnet, "old"),
            id: "subnet-old".into(),
            tags: BTreeMap::new(),
            attrs: BTreeMap::new(),
        });
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(plan.summary().delete, 1);
        assert_eq!(plan.summary().unchanged, want.len());
    }

    #[test]
    fn two_matches_is_an_error_naming_both() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = converged(&want);
        let mut dup = live[2].clone();
        dup.id = "subnet-dup".into();
        live.push(dup);
        let err = reconcile("demo", "eu-central-1", &want, &live).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("subnet-0002") && msg.contains("subnet-dup"),
            "{msg}"
        );
        assert!(msg.contains("subnet.public"), "{msg}");
    }

    #[test]
    fn missing_tag_is_set_in_place_and_foreign_tags_are_left_alone() {
        let mut s = stack();
        s.tags.insert("team".into(), "web".into());
        let want = resources(&s, &crate::desired::test_facts());
        let mut live = converged(&want);
        live[0].tags.remove("team");
        live[0].tags.insert("owner".into(), "someone".into());
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(plan.changes[0].action, Action::Update);
        let (added, removed) = plan.changes[0].attrs[0].set_delta();
        assert_eq!(
            added,
            BTreeSet::from([Item::Tag("team".into(), "web".into())])
        );
        assert!(removed.is_empty());
        assert!(plan.changes[1..].iter().all(|c| c.action == Action::NoOp));
    }

    fn with_live(
        want: &[Desired],
        address: Address,
        name: &'static str,
        value: Value,
    ) -> Vec<Observed> {
        let mut live = converged(want);
        live.iter_mut()
            .find(|o| o.address == address)
            .unwrap()
            .attrs
            .insert(name, value);
        live
    }

    #[test]
    fn newer_engine_minor_is_not_downgraded() {
        let mut s = stack();
        s.database.as_mut().unwrap().engine_version = "16.4".into();
        let want = resources(&s, &crate::desired::test_facts());
        // AWS upgraded the minor version by itself.
        let live = with_live(
            &want,
            desired::database(),
            "engine_version",
            Value::Text("16.6".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert!(!plan.has_changes(), "{plan:#?}");
        // An older minor is upgraded in place.
        let live = with_live(
            &want,
            desired::database(),
            "engine_version",
            Value::Text("16.2".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::database()), Action::Update);
        // A lower major is refused at plan time.
        let live = with_live(
            &want,
            desired::database(),
            "engine_version",
            Value::Text("17.1".into()),
        );
        let err = reconcile("demo", "eu-central-1", &want, &live).unwrap_err();
        assert!(err.to_string().contains("can't downgrade"), "{err}");
    }

    #[test]
    fn disks_grow_in_place_and_never_shrink() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let live = with_live(
            &want,
            desired::instance(),
            "root_volume_size",
            Value::Int(20),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::instance()), Action::Update);
        let live = with_live(
            &want,
            desired::instance(),
            "root_volume_size",
            Value::Int(80),
        );
        let err = reconcile("demo", "eu-central-1", &want, &live).unwrap_err();
        assert!(err.to_string().contains("never shrink"), "{err}");
        let live = with_live(
            &want,
            desired::database(),
            "allocated_storage",
            Value::Int(100),
        );
        assert!(reconcile("demo", "eu-central-1", &want, &live).is_err());
    }

    #[test]
    fn newer_image_never_replaces_the_server_but_another_choice_does() {
        let want = resources(&stack(), &crate::desired::test_facts());
        // The server was made from an image that has since been superseded.
        let live = with_live(
            &want,
            desired::instance(),
            "image_id",
            Value::Text("ami-old".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert!(!plan.has_changes());
        let live = with_live(
            &want,
            desired::instance(),
            "image",
            Value::Text("nixos 25.11 x86_64".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::instance()), Action::Replace);
    }

    #[test]
    fn changed_password_hash_is_an_update() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let live = with_live(
            &want,
            desired::database(),
            "password",
            Value::Sensitive("argon2id:other".into()),
        );
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(action_of(&plan, &desired::database()), Action::Update);
    }

    #[test]
    fn destroy_deletes_dependents_first() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let live = converged(&want);
        let plan = destroy("demo", "eu-central-1", &want, &live).unwrap();
        assert_eq!(plan.summary().delete, want.len());
        let order: Vec<_> = plan.changes.iter().map(|c| c.address.to_string()).collect();
        // The parameters hold what the database and the key are: first.
        assert!(
            order[..3].iter().all(|a| a.starts_with("parameter.")),
            "{order:?}"
        );
        assert!(order.contains(&"database.postgres-db".to_string()));
        assert_eq!(order.last().unwrap(), "vpc.vpc");
    }

    #[test]
    fn replacing_an_address_replaces_it_with_nothing_else_changed() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let live = converged(&want);
        let server = crate::desired::instance();
        let plan = reconcile_replacing(
            "demo",
            "eu-central-1",
            &want,
            &live,
            std::slice::from_ref(&server),
        )
        .unwrap();
        let replaced: Vec<&Address> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Replace)
            .map(|c| &c.address)
            .collect();
        assert_eq!(replaced, [&server]);
        let change = plan.changes.iter().find(|c| c.address == server).unwrap();
        assert!(
            change.attrs.iter().all(|a| !a.forces_replacement),
            "nothing differs: {:?}",
            change.attrs
        );
    }
}
