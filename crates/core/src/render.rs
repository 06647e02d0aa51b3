//! Plans and run outcomes as text for people. Pure: the caller decides where
//! it goes and whether it has colours.

use std::fmt::Write;

use console::Style;

use crate::executor::Outcome;
use crate::model::{Kind, Value};
use crate::plan::{Action, AttrChange, Change, Plan, PlanError};

pub struct Palette {
    create: Style,
    update: Style,
    replace: Style,
    delete: Style,
    dim: Style,
    bold: Style,
}

impl Palette {
    pub fn new(colors: bool) -> Self {
        let s = || Style::new().force_styling(colors);
        Palette {
            create: s().green(),
            update: s().yellow(),
            replace: s().magenta(),
            delete: s().red(),
            dim: s().dim(),
            bold: s().bold(),
        }
    }
}

impl Palette {
    pub fn ok(&self, text: &str) -> String {
        self.create.apply_to(text).to_string()
    }
    pub fn err(&self, text: &str) -> String {
        self.delete.apply_to(text).to_string()
    }
}

fn symbol(action: Action) -> &'static str {
    match action {
        Action::NoOp => " ",
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
    }
}

fn style(p: &Palette, action: Action) -> &Style {
    match action {
        Action::Create => &p.create,
        Action::Update => &p.update,
        Action::Replace => &p.replace,
        Action::Delete => &p.delete,
        Action::NoOp => &p.dim,
    }
}

/// `ihp-infra show`: every resource of the stack, unchanged ones too, with
/// its id, Name and what apply would do with it.
pub fn status(plan: &Plan, p: &Palette) -> String {
    let mut out = String::new();
    let summary = plan.summary();
    let _ = writeln!(
        out,
        "Stack {} in {}: {} resources live, {} to change\n",
        plan.prefix,
        plan.region,
        plan.changes
            .iter()
            .filter(|c| c.action != Action::Create)
            .count(),
        summary.create + summary.update + summary.replace + summary.delete
    );
    let width =
        |f: fn(&Change) -> String| plan.changes.iter().map(|c| f(c).len()).max().unwrap_or(0);
    let (wa, wi) = (
        width(|c| c.address.to_string()),
        width(|c| c.id.clone().unwrap_or_else(|| "-".into())),
    );
    for c in &plan.changes {
        let state = match c.action {
            Action::NoOp => "as the stack file says".to_string(),
            Action::Create => "missing: apply creates it".into(),
            Action::Update => format!(
                "apply changes {}",
                c.attrs
                    .iter()
                    .map(|a| a.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Action::Replace => "apply replaces it".into(),
            Action::Delete => "not in the stack file: apply deletes it".into(),
        };
        // The server says whether it runs.
        let state = match c.observed.text("state") {
            Some(s) if c.address.kind == crate::model::Kind::Instance => format!("{s}; {state}"),
            _ => state,
        };
        let line = format!(
            "{} {:wa$}  {:wi$}  {}",
            symbol(c.action),
            c.address.to_string(),
            c.id.as_deref().unwrap_or("-"),
            state
        );
        let _ = writeln!(out, "{}", style(p, c.action).apply_to(line.trim_end()));
    }
    out
}

/// The plan, change by change, attribute by attribute.
pub fn plan(plan: &Plan, p: &Palette) -> String {
    let mut out = String::new();
    let changes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    if changes.is_empty() {
        let _ = writeln!(
            out,
            "No changes. Stack {} in {} matches its file ({} resources).",
            plan.prefix,
            plan.region,
            plan.changes.len()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "Stack {} in {}:",
        p.bold.apply_to(&plan.prefix),
        plan.region
    );
    let risks = plan.risks();
    for c in changes {
        change(&mut out, c, &risks, p);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", summary(plan, p));
    out
}

fn change(out: &mut String, c: &Change, risks: &[PlanError], p: &Palette) {
    let st = style(p, c.action);
    let id =
        c.id.as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
    let note = match c.action {
        Action::Replace => "  must be replaced",
        Action::Delete => "  will be deleted",
        _ => "",
    };
    let _ = writeln!(
        out,
        "\n  {} {} {}{}{}",
        st.apply_to(format!("{:>3}", symbol(c.action))),
        p.bold.apply_to(&c.address),
        c.name,
        p.dim.apply_to(id),
        st.apply_to(note)
    );
    for risk in risks.iter().filter(|_| c.action == Action::Replace) {
        let warning = match risk {
            PlanError::ReplacesDatabase { .. } if c.address.kind == Kind::Database => {
                "! the new database starts empty: the data stays only in the final snapshot of the old one (apply needs --replace-database)"
            }
            PlanError::ReplacesServer { .. } if c.address.kind == Kind::Instance => {
                "! the new server starts without the data on the old one's disk (Postgres, as there is no RDS database), kept only in a snapshot (apply needs --replace-server)"
            }
            _ => continue,
        };
        let _ = writeln!(out, "        {}", p.delete.apply_to(warning));
    }
    if let Some(data) = c.data_on_delete {
        let _ = writeln!(
            out,
            "        {}",
            p.dim
                .apply_to(format!("# data on delete: {}", data.describe()))
        );
    }
    if matches!(c.action, Action::Delete | Action::Replace)
        && c.observed.bool("deletion_protection") == Some(true)
    {
        let _ = writeln!(
            out,
            "        {}",
            p.dim
                .apply_to("# deletion protection is on: lifted first, by this run only")
        );
    }
    let width = c.attrs.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in &c.attrs {
        if c.action == Action::Replace && a.before.as_ref() == Some(&a.after) {
            continue;
        }
        attr(out, a, width, c.action, p);
    }
}

fn attr(out: &mut String, a: &AttrChange, width: usize, action: Action, p: &Palette) {
    let forces = if a.forces_replacement {
        format!("  {}", p.replace.apply_to("# forces replacement"))
    } else {
        String::new()
    };
    match (&a.before, &a.after) {
        (before, Value::Set(after))
            if action == Action::Create || matches!(before, Some(Value::Set(_))) =>
        {
            let (added, removed) = a.set_delta();
            let _ = writeln!(out, "        {}{forces}", a.name);
            for item in removed {
                let _ = writeln!(out, "          {} {item}", p.delete.apply_to("-"));
            }
            for item in added {
                let _ = writeln!(out, "          {} {item}", p.create.apply_to("+"));
            }
            if after.is_empty() && action == Action::Create {
                let _ = writeln!(out, "          (none)");
            }
        }
        (None, after) => {
            let _ = writeln!(out, "        {:width$} = {after}{}", a.name, cost(a, p));
        }
        (Some(_), Value::Sensitive(_)) => {
            let _ = writeln!(
                out,
                "        {:width$}   (sensitive) -> (sensitive){forces}",
                a.name
            );
        }
        (Some(before), after) => {
            let forces = match (action, a.name) {
                (Action::Update, "instance_type") => {
                    format!(
                        "  {}",
                        p.update.apply_to("# the server is stopped and started")
                    )
                }
                (Action::Update, "multi_az") => cost(a, p),
                _ => forces,
            };
            let _ = writeln!(
                out,
                "        {:width$}   {} -> {}{forces}",
                a.name,
                p.delete.apply_to(before),
                p.create.apply_to(after)
            );
        }
    }
}

/// What an attribute's new value costs, where it is worth saying.
fn cost(a: &AttrChange, p: &Palette) -> String {
    match (a.name, &a.after) {
        ("multi_az", Value::Bool(true)) => format!(
            "  {}",
            p.update
                .apply_to("# a standby in a second zone: doubles the database's cost")
        ),
        _ => String::new(),
    }
}

/// For a domain without a Route53 zone: the records the user makes at the
/// registrar (ihp-infra can't), said after the plan.
pub fn registrar_note(stack: &crate::stack::Stack) -> Option<String> {
    let domain = stack.domain.as_ref().filter(|d| d.zone.is_none())?;
    let names: Vec<&str> = domain.names().collect();
    Some(format!(
        "DNS is yours to set (the stack names no dns_zone): at your registrar, point {} (A) \
         at the server's address; `ihp-infra output` shows it, and whether the names resolve yet.",
        names.join(", ")
    ))
}

pub fn summary(plan: &Plan, p: &Palette) -> String {
    let s = plan.summary();
    format!(
        "Plan: {} to add, {} to change, {} to replace, {} to destroy.",
        p.create.apply_to(s.create),
        p.update.apply_to(s.update),
        p.replace.apply_to(s.replace),
        p.delete.apply_to(s.delete),
    )
}

/// How a run ended: the summary of a success (with what deletes kept), or
/// the message of a failure, naming each failed step with its `hint`.
pub fn outcome<E: std::fmt::Display>(
    plan: &Plan,
    outcome: &Outcome<E>,
    verb: &str,
    elapsed: std::time::Duration,
    p: &Palette,
    hint: impl Fn(&E) -> Option<&'static str>,
) -> Result<String, String> {
    if outcome.succeeded() {
        let s = plan.summary();
        let mut done = format!(
            "\n{} {verb} complete in {:.1}s: {} created, {} updated, {} replaced, {} deleted.",
            p.ok("✓"),
            elapsed.as_secs_f64(),
            s.create,
            s.update,
            s.replace,
            s.delete
        );
        for note in &outcome.notes {
            let _ = write!(done, "\n  kept: {note}");
        }
        return Ok(done);
    }
    let mut message = format!(
        "{verb} did not complete ({} steps done)",
        outcome.done.len()
    );
    for (step, e) in &outcome.failed {
        let _ = write!(
            message,
            "\n  failed to {} {}: {e}",
            step.phase.verb(),
            step.address
        );
        if let Some(hint) = hint(e) {
            let _ = write!(message, "\n    hint: {hint}");
        }
    }
    if !outcome.skipped.is_empty() {
        let skipped: Vec<String> = outcome.skipped.iter().map(|s| s.to_string()).collect();
        let _ = write!(message, "\n  not started: {}", skipped.join(", "));
    }
    if outcome.interrupted {
        message.push_str("\n  interrupted by the user");
    }
    let _ = write!(
        message,
        "\n  nothing is lost: run `ihp-infra {verb}` again to finish"
    );
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{self, resources};
    use crate::model::{Item, Observed, Peer, Rule};
    use crate::plan::reconcile;
    use crate::stack::Stack;

    fn stack() -> Stack {
        crate::stack::test_stack("demo")
    }

    fn converged() -> Vec<Observed> {
        crate::plan::converged(
            &resources(&stack(), &crate::desired::test_facts()),
            |i, a| format!("{}-{i}", a.kind),
        )
    }

    #[test]
    fn create_everything() {
        let plan = reconcile(
            "demo",
            "eu-central-1",
            &resources(&stack(), &crate::desired::test_facts()),
            &[],
        )
        .unwrap();
        insta::assert_snapshot!(super::plan(&plan, &Palette::new(false)));
    }

    #[test]
    fn drift_and_replacement() {
        let mut live = converged();
        live[0]
            .attrs
            .insert("enable_dns_hostnames", Value::Bool(false));
        live[2]
            .attrs
            .insert("cidr_block", Value::Text("10.0.9.0/24".into()));
        let app = live
            .iter_mut()
            .find(|o| o.address == desired::app_security_group())
            .unwrap();
        if let Some(Value::Set(ingress)) = app.attrs.get_mut("ingress") {
            ingress.insert(Item::Rule(Rule::tcp(8080, Peer::Cidr("0.0.0.0/0".into()))));
        }
        let plan = reconcile(
            "demo",
            "eu-central-1",
            &resources(&stack(), &crate::desired::test_facts()),
            &live,
        )
        .unwrap();
        insta::assert_snapshot!(super::plan(&plan, &Palette::new(false)));
    }

    #[test]
    fn replacing_the_database_warns_about_its_data() {
        let mut live = converged();
        let db = live
            .iter_mut()
            .find(|o| o.address == desired::database())
            .unwrap();
        db.attrs.insert("storage_encrypted", Value::Bool(false));
        let plan = reconcile(
            "demo",
            "eu-central-1",
            &resources(&stack(), &crate::desired::test_facts()),
            &live,
        )
        .unwrap();
        let text = super::plan(&plan, &Palette::new(false));
        assert!(
            text.contains("-/+ database.postgres-db demo-postgres-db (database-20)  must be replaced\n        ! the new database starts empty"),
            "{text}"
        );
    }

    #[test]
    fn destroy_says_it_lifts_deletion_protection() {
        let wanted = resources(&stack(), &crate::desired::test_facts());
        let plan = crate::plan::destroy("demo", "eu-central-1", &wanted, &converged()).unwrap();
        let text = super::plan(&plan, &Palette::new(false));
        let db = text
            .split("\n\n")
            .find(|c| c.contains("database.postgres-db"))
            .unwrap();
        assert!(
            db.contains("# deletion protection is on: lifted first, by this run only"),
            "{db}"
        );
        let others = text.matches("deletion protection").count();
        assert_eq!(others, 1, "only the database has it: {text}");
    }

    #[test]
    fn a_standby_database_says_what_it_costs() {
        let mut stack = stack();
        stack.database.as_mut().unwrap().multi_az = true;
        let wanted = resources(&stack, &crate::desired::test_facts());
        let plan = reconcile("demo", "eu-central-1", &wanted, &converged()).unwrap();
        let text = super::plan(&plan, &Palette::new(false));
        assert!(
            text.contains("multi_az   false -> true  # a standby in a second zone: doubles the database's cost"),
            "{text}"
        );
    }

    #[test]
    fn no_changes() {
        let plan = reconcile(
            "demo",
            "eu-central-1",
            &resources(&stack(), &crate::desired::test_facts()),
            &converged(),
        )
        .unwrap();
        assert_eq!(
            super::plan(&plan, &Palette::new(false)),
            "No changes. Stack demo in eu-central-1 matches its file (24 resources).\n"
        );
    }

    #[test]
    fn status_lists_unchanged_resources_too() {
        let stack = crate::stack::test_stack("demo");
        let wanted = crate::desired::resources(&stack, &crate::desired::test_facts());
        let mut plan = crate::plan::reconcile("demo", "eu-central-1", &wanted, &[]).unwrap();
        plan.changes[0].action = Action::NoOp;
        plan.changes[0].id = Some("vpc-0123456789abcdef0".into());
        let text = status(&plan, &Palette::new(false));
        let vpc = text.lines().find(|l| l.starts_with("  vpc.vpc ")).unwrap();
        assert!(
            vpc.ends_with("vpc-0123456789abcdef0  as the stack file says"),
            "{text}"
        );
        assert!(text.starts_with("Stack demo in eu-central-1: 1 resources live, 23 to change"));
        assert!(text.contains("+ subnet.public"), "{text}");
        assert!(text.contains("missing: apply creates it"), "{text}");
        assert_eq!(text.lines().count(), plan.changes.len() + 2, "{text}");
    }
}
