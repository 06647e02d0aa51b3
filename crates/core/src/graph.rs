//! `plan --graph`: the plan's resources and the order they are worked in,
//! from each change's own `depends_on`, as mermaid (GitHub renders it in
//! Markdown) or Graphviz DOT.

use std::fmt::Write as _;

use crate::model::Address;
use crate::plan::{Action, Plan};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

/// The symbol the text plan uses for an action; none for unchanged.
fn symbol(action: Action) -> &'static str {
    match action {
        Action::NoOp => "",
        Action::Create => "+ ",
        Action::Update => "~ ",
        Action::Replace => "-/+ ",
        Action::Delete => "- ",
    }
}

fn class(action: Action) -> &'static str {
    match action {
        Action::NoOp => "unchanged",
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
    }
}

/// A mermaid node id: letters, digits and underscores only.
fn node(address: &Address) -> String {
    address
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An edge from each dependency to what needs it: the order the executor
/// works in (for deletes, `depends_on` lists what goes first).
fn edges(plan: &Plan) -> Vec<(&Address, &Address)> {
    let present = |a: &Address| plan.changes.iter().any(|c| &c.address == a);
    plan.changes
        .iter()
        .flat_map(|c| {
            c.depends_on
                .iter()
                .filter(|d| present(d))
                .map(move |d| (d, &c.address))
        })
        .collect()
}

pub fn render(plan: &Plan, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Mermaid => {
            out.push_str("flowchart LR\n");
            for c in &plan.changes {
                let _ = writeln!(
                    out,
                    "    {}[\"{}{}\"]:::{}",
                    node(&c.address),
                    symbol(c.action),
                    c.address,
                    class(c.action)
                );
            }
            for (from, to) in edges(plan) {
                let _ = writeln!(out, "    {} --> {}", node(from), node(to));
            }
            for (class, style) in [
                ("create", "fill:#e6ffed,stroke:#22863a"),
                ("update", "fill:#fff8c5,stroke:#9a6700"),
                ("replace", "fill:#ffebe9,stroke:#cf222e"),
                ("delete", "fill:#ffebe9,stroke:#cf222e,stroke-dasharray:4"),
                ("unchanged", "fill:#f6f8fa,stroke:#8c959f"),
            ] {
                let _ = writeln!(out, "    classDef {class} {style}");
            }
        }
        Format::Dot => {
            let _ = writeln!(
                out,
                "digraph \"{} in {}\" {{\n    rankdir=LR;\n    node [shape=box];",
                plan.prefix, plan.region
            );
            for c in &plan.changes {
                let style = match c.action {
                    Action::NoOp => "",
                    Action::Create => ", color=darkgreen",
                    Action::Update => ", color=orange",
                    Action::Replace | Action::Delete => ", color=red",
                };
                let _ = writeln!(
                    out,
                    "    \"{}\" [label=\"{}{}\"{style}];",
                    c.address,
                    symbol(c.action),
                    c.address
                );
            }
            for (from, to) in edges(plan) {
                let _ = writeln!(out, "    \"{from}\" -> \"{to}\";");
            }
            out.push_str("}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired;

    fn plan() -> Plan {
        let stack = crate::stack::test_stack("demo");
        let wanted = desired::resources(&stack, &desired::test_facts());
        crate::plan::reconcile("demo", "eu-central-1", &wanted, &[]).unwrap()
    }

    #[test]
    fn every_resource_is_a_node_and_every_dependency_an_edge() {
        let plan = plan();
        let text = render(&plan, Format::Mermaid);
        for c in &plan.changes {
            assert!(
                text.contains(&format!(
                    "{}[\"+ {}\"]:::create",
                    node(&c.address),
                    c.address
                )),
                "{}",
                c.address
            );
            for d in &c.depends_on {
                assert!(
                    text.contains(&format!("{} --> {}", node(d), node(&c.address))),
                    "{d} -> {}",
                    c.address
                );
            }
        }
        assert!(text.contains("vpc_vpc --> subnet_public"), "{text}");
    }

    #[test]
    fn dot_names_nodes_by_address() {
        let text = render(&plan(), Format::Dot);
        assert!(
            text.starts_with("digraph \"demo in eu-central-1\" {"),
            "{text}"
        );
        assert!(text.contains("\"vpc.vpc\" -> \"subnet.public\";"), "{text}");
        assert!(text.trim_end().ends_with('}'));
    }
}
