//! What a stack wants to exist: a list of resources with dependencies.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Address, Attr, Desired, Item, Kind, Mutability, Peer, Ref, Rule, Value};
use crate::stack::{STACK_TAG, Stack};

pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const ANYWHERE: &str = "0.0.0.0/0";

pub fn vpc() -> Address {
    Address::new(Kind::Vpc, "vpc")
}
pub fn internet_gateway() -> Address {
    Address::new(Kind::InternetGateway, "igw")
}
pub fn public_subnet() -> Address {
    Address::new(Kind::Subnet, "public")
}
pub fn private_subnet(n: u8) -> Address {
    Address::new(Kind::Subnet, &format!("private-{n}"))
}
pub fn public_route_table() -> Address {
    Address::new(Kind::RouteTable, "public-rt")
}
pub fn app_security_group() -> Address {
    Address::new(Kind::SecurityGroup, "app")
}
pub fn db_security_group() -> Address {
    Address::new(Kind::SecurityGroup, "db")
}

fn pending(addr: Address) -> Value {
    Value::Ref(Ref::Pending(addr))
}
fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
fn replace(name: &'static str, value: Value) -> Attr {
    Attr {
        name,
        value,
        mutability: Mutability::ForcesReplacement,
    }
}
fn in_place(name: &'static str, value: Value) -> Attr {
    Attr {
        name,
        value,
        mutability: Mutability::InPlace,
    }
}
fn rules(rules: impl IntoIterator<Item = Rule>) -> Value {
    Value::Set(rules.into_iter().map(Item::Rule).collect())
}

/// The tags a resource of `stack` with this role is created with.
pub fn tags(stack: &Stack, role: &str) -> BTreeMap<String, String> {
    let mut tags = stack.tags.clone();
    tags.insert(STACK_TAG.to_string(), stack.prefix.clone());
    tags.insert("Name".to_string(), stack.name(role));
    tags
}

/// Every resource the stack wants, dependencies before dependents.
pub fn resources(stack: &Stack) -> Vec<Desired> {
    let resource = |address: Address, attrs: Vec<Attr>, depends_on: Vec<Address>| Desired {
        tags: tags(stack, &address.role),
        address,
        attrs,
        depends_on,
    };
    let subnet = |address: Address, cidr: &str, az: &str, public: bool| {
        resource(
            address,
            vec![
                replace("vpc", pending(vpc())),
                replace("cidr_block", text(cidr)),
                replace("availability_zone", text(az)),
                in_place("map_public_ip_on_launch", Value::Bool(public)),
            ],
            vec![vpc()],
        )
    };
    let security_group = |address: Address, description: &str, ingress, egress, deps| {
        let group_name = stack.name(&address.role);
        resource(
            address,
            vec![
                replace("vpc", pending(vpc())),
                replace("group_name", Value::Text(group_name)),
                replace("description", text(description)),
                in_place("ingress", ingress),
                in_place("egress", egress),
            ],
            deps,
        )
    };
    let anywhere = || Peer::Cidr(ANYWHERE.to_string());
    let web_ports = [22, 80, 443];

    vec![
        resource(
            vpc(),
            vec![
                replace("cidr_block", text(VPC_CIDR)),
                in_place("enable_dns_support", Value::Bool(true)),
                in_place("enable_dns_hostnames", Value::Bool(true)),
            ],
            vec![],
        ),
        resource(
            internet_gateway(),
            vec![in_place("vpc", pending(vpc()))],
            vec![vpc()],
        ),
        subnet(public_subnet(), "10.0.1.0/24", &stack.az_1, true),
        subnet(private_subnet(1), "10.0.2.0/24", &stack.az_1, false),
        subnet(private_subnet(2), "10.0.3.0/24", &stack.az_2, false),
        resource(
            public_route_table(),
            vec![
                replace("vpc", pending(vpc())),
                in_place(
                    "routes",
                    Value::Set(BTreeSet::from([Item::Route {
                        destination: ANYWHERE.to_string(),
                        gateway: Ref::Pending(internet_gateway()),
                    }])),
                ),
                in_place(
                    "subnets",
                    Value::Set(BTreeSet::from([Item::Subnet(
                        Ref::Pending(public_subnet()),
                    )])),
                ),
            ],
            vec![vpc(), internet_gateway(), public_subnet()],
        ),
        security_group(
            app_security_group(),
            "ihp-infra: the app server (ssh, http, https in)",
            rules(web_ports.map(|p| Rule::tcp(p, anywhere()))),
            rules(
                web_ports
                    .into_iter()
                    .chain([5432])
                    .map(|p| Rule::tcp(p, anywhere())),
            ),
            vec![vpc()],
        ),
        security_group(
            db_security_group(),
            "ihp-infra: the database (postgres from the app server only)",
            rules([Rule::tcp(
                5432,
                Peer::Group(Ref::Pending(app_security_group())),
            )]),
            rules([Rule::all_traffic(anywhere())]),
            vec![vpc(), app_security_group()],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Secret;

    pub fn stack(prefix: &str) -> Stack {
        Stack {
            path: "stack.yaml".into(),
            prefix: prefix.into(),
            region: "eu-central-1".into(),
            az_1: "eu-central-1a".into(),
            az_2: "eu-central-1b".into(),
            key_name: "k".into(),
            db_password: Secret::new("password1"),
            tags: BTreeMap::from([("team".to_string(), "web".to_string())]),
        }
    }

    #[test]
    fn every_resource_tagged_with_stack_and_name() {
        for r in resources(&stack("demo")) {
            assert_eq!(r.tags[STACK_TAG], "demo", "{}", r.address);
            assert_eq!(r.tags["Name"], format!("demo-{}", r.address.role));
            assert_eq!(r.tags["team"], "web");
        }
    }

    #[test]
    fn dependencies_come_first_and_exist() {
        let all = resources(&stack("demo"));
        for (i, r) in all.iter().enumerate() {
            for dep in &r.depends_on {
                let pos = all.iter().position(|d| &d.address == dep);
                assert!(pos.is_some_and(|p| p < i), "{} needs {dep}", r.address);
            }
        }
    }

    #[test]
    fn app_egress_is_exactly_four_tcp_ports() {
        let all = resources(&stack("demo"));
        let app = all
            .iter()
            .find(|r| r.address == app_security_group())
            .unwrap();
        let egress = app.attrs.iter().find(|a| a.name == "egress").unwrap();
        let Value::Set(items) = &egress.value else {
            panic!("egress is a set")
        };
        let ports: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            ports,
            [
                "tcp/22 0.0.0.0/0",
                "tcp/80 0.0.0.0/0",
                "tcp/443 0.0.0.0/0",
                "tcp/5432 0.0.0.0/0"
            ]
        );
    }
}
