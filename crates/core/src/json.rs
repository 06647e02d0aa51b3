//! The plan as one JSON document, for CI. Its shape is documented in
//! docs/plan-json.md; `FORMAT_VERSION` changes when a field is removed
//! or changes meaning (adding one doesn't). Sensitive values are never in it.

use serde::Serialize;

use crate::model::{Item, Ref, Value};
use crate::plan::{Action, AttrChange, Change, DataOnDelete, Plan, has_pending};

pub const FORMAT_VERSION: &str = "1.0";

#[derive(Debug, Serialize)]
pub struct PlanDocument<'a> {
    pub format_version: &'static str,
    pub stack: &'a str,
    pub region: &'a str,
    pub has_changes: bool,
    /// The flags `apply` needs to carry this plan out (e.g.
    /// "--replace-database"): a CI job can stop for a human instead.
    pub apply_needs: Vec<&'static str>,
    pub summary: Summary,
    pub resources: Vec<Resource<'a>>,
}

/// Terraform's words, so CI scripts read the same.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub replace: usize,
    pub destroy: usize,
    pub unchanged: usize,
}

#[derive(Debug, Serialize)]
pub struct Resource<'a> {
    pub address: String,
    pub kind: &'static str,
    pub role: &'a str,
    pub name: &'a str,
    /// The live id; null when the resource doesn't exist yet.
    pub id: Option<&'a str>,
    pub action: &'static str,
    pub depends_on: Vec<String>,
    /// What a delete or replacement does with the data the resource holds
    /// ("final_snapshot", "disk_snapshot", "lost", "refuse_if_not_empty",
    /// "empty_first"); null when it holds none of the user's data or
    /// stays.
    pub data_on_delete: Option<DataOnDelete>,
    pub changes: Vec<Attribute>,
}

#[derive(Debug, Serialize)]
pub struct Attribute {
    pub name: &'static str,
    /// The live value; null on create, and when sensitive.
    pub before: serde_json::Value,
    /// The value it will have; null when sensitive or not known until apply.
    pub after: serde_json::Value,
    /// Known only during apply (e.g. the id of a resource still to create).
    pub after_unknown: bool,
    pub sensitive: bool,
    pub forces_replacement: bool,
}

fn action(action: Action) -> &'static str {
    match action {
        Action::NoOp => "no-op",
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
    }
}

/// A value as JSON. Strings for what the text plan shows as text; items of
/// a set are their text form ("tcp/22 0.0.0.0/0"); a reference not yet
/// known is null (see `after_unknown`), and one inside a set is its text.
fn value(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Text(t) | Value::AtLeastVersion(t) => J::String(t.clone()),
        Value::Int(i) => J::from(*i),
        Value::Bool(b) => J::Bool(*b),
        Value::Json(j) => serde_json::from_str(j).unwrap_or_else(|_| J::String(j.clone())),
        Value::Set(items) => J::Array(items.iter().map(item).collect()),
        Value::Ref(Ref::Id(id)) => J::String(id.clone()),
        Value::Ref(Ref::Pending(_)) | Value::Sensitive(_) | Value::None => J::Null,
    }
}

fn item(i: &Item) -> serde_json::Value {
    serde_json::Value::String(i.to_string())
}

fn attribute(a: &AttrChange) -> Attribute {
    let sensitive =
        matches!(a.after, Value::Sensitive(_)) || matches!(a.before, Some(Value::Sensitive(_)));
    let masked = |v: &Value| {
        if sensitive {
            serde_json::Value::Null
        } else {
            value(v)
        }
    };
    Attribute {
        name: a.name,
        before: a.before.as_ref().map_or(serde_json::Value::Null, masked),
        after: masked(&a.after),
        after_unknown: has_pending(&a.after),
        sensitive,
        forces_replacement: a.forces_replacement,
    }
}

fn resource(c: &Change) -> Resource<'_> {
    Resource {
        address: c.address.to_string(),
        kind: c.address.kind.label(),
        role: &c.address.role,
        name: &c.name,
        id: c.id.as_deref(),
        action: action(c.action),
        depends_on: c.depends_on.iter().map(|a| a.to_string()).collect(),
        data_on_delete: c.data_on_delete,
        // As in the text plan: a replace lists what differs, not what stays.
        changes: c
            .attrs
            .iter()
            .filter(|a| c.action != Action::Replace || a.before.as_ref() != Some(&a.after))
            .map(attribute)
            .collect(),
    }
}

pub fn plan(plan: &Plan) -> PlanDocument<'_> {
    let s = plan.summary();
    PlanDocument {
        format_version: FORMAT_VERSION,
        stack: &plan.prefix,
        region: &plan.region,
        has_changes: plan.has_changes(),
        apply_needs: plan.risks().iter().filter_map(|r| r.flag()).collect(),
        summary: Summary {
            add: s.create,
            change: s.update,
            replace: s.replace,
            destroy: s.delete,
            unchanged: s.unchanged,
        },
        resources: plan.changes.iter().map(resource).collect(),
    }
}

/// The document as pretty JSON text.
pub fn plan_text(p: &Plan) -> String {
    serde_json::to_string_pretty(&plan(p)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{resources, test_facts};
    use crate::plan::{converged, reconcile};
    use crate::stack::test_stack;

    fn desired() -> Vec<crate::model::Desired> {
        resources(&test_stack("demo"), &test_facts())
    }

    #[test]
    fn create_everything_has_unknown_ids_and_a_masked_password() {
        let plan = reconcile("demo", "eu-central-1", &desired(), &[]).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&plan_text(&plan)).unwrap();
        assert_eq!(doc["format_version"], "1.0");
        assert_eq!(doc["has_changes"], true);
        assert_eq!(doc["summary"]["add"], 24);
        let resources = doc["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 24);
        let subnet = resources
            .iter()
            .find(|r| r["address"] == "subnet.public")
            .unwrap();
        assert_eq!(subnet["action"], "create");
        assert_eq!(subnet["id"], serde_json::Value::Null);
        let vpc_id = subnet["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "vpc")
            .unwrap();
        assert_eq!(vpc_id["after"], serde_json::Value::Null);
        assert_eq!(vpc_id["after_unknown"], true);
        let db = resources
            .iter()
            .find(|r| r["address"] == "database.postgres-db")
            .unwrap();
        let password = db["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "password")
            .unwrap();
        assert_eq!(password["sensitive"], true);
        assert_eq!(password["after"], serde_json::Value::Null);
        let text = plan_text(&plan);
        assert!(!text.contains(&test_facts().password_hash), "{text}");
        assert_eq!(doc["apply_needs"], serde_json::json!([]));
    }

    #[test]
    fn replacing_the_database_says_apply_needs_the_flag() {
        let mut live = converged(&desired(), |i, a| format!("{}-{i}", a.kind));
        live.iter_mut()
            .find(|o| o.address == crate::desired::database())
            .unwrap()
            .attrs
            .insert("username", Value::Text("someone_else".into()));
        let plan = reconcile("demo", "eu-central-1", &desired(), &live).unwrap();
        let doc = serde_json::to_value(super::plan(&plan)).unwrap();
        assert_eq!(
            doc["apply_needs"],
            serde_json::json!(["--replace-database"])
        );
    }

    #[test]
    fn replacement_names_the_attribute_that_forces_it() {
        let mut live = converged(&desired(), |i, a| format!("{}-{i}", a.kind));
        live[2]
            .attrs
            .insert("cidr_block", Value::Text("10.0.9.0/24".into()));
        let plan = reconcile("demo", "eu-central-1", &desired(), &live).unwrap();
        let doc = serde_json::to_value(super::plan(&plan)).unwrap();
        let subnet = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "replace" && r["kind"] == "subnet")
            .unwrap();
        assert_eq!(subnet["id"], "subnet-2");
        let cidr = &subnet["changes"][0];
        assert_eq!(cidr["name"], "cidr_block");
        assert_eq!(cidr["before"], "10.0.9.0/24");
        assert_eq!(cidr["after"], "10.0.1.0/24");
        assert_eq!(cidr["forces_replacement"], true);
    }

    #[test]
    fn no_changes_is_every_resource_as_a_no_op() {
        let live = converged(&desired(), |i, a| format!("{}-{i}", a.kind));
        let plan = reconcile("demo", "eu-central-1", &desired(), &live).unwrap();
        let doc = serde_json::to_value(super::plan(&plan)).unwrap();
        assert_eq!(doc["has_changes"], false);
        assert_eq!(doc["summary"]["unchanged"], 24);
        assert!(
            doc["resources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["action"] == "no-op" && r["changes"] == serde_json::json!([]))
        );
    }
}
