//! EC2: the network kinds (VPC, internet gateway, subnets, route table,
//! security groups). Observes them by the stack tag, creates them with their
//! tags, updates and deletes them. Every call is safe to repeat.

pub mod address;
pub mod adopt;
pub mod instance;

pub use instance::{IMAGE_TAG, NIXOS_OWNER, client_token};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType,
    Tag, TagSpecification, UserIdGroupPair, VpcAttributeName,
};
use futures::future::try_join_all;

use super::overlay::{Overlay, merge};
use super::service::{CallError, Created, Service, Wanted, required};
use crate::aws::calls;
use crate::desired::ANYWHERE;
use crate::model::{Address, Attrs, Item, Kind, Observed, Peer, Ref, Rule, Value};
use crate::plan::{AttrChange, Change, DataOnDelete};
use crate::retry::{Budgets, NotYet, retry};
use crate::stack::STACK_TAG;
use async_trait::async_trait;

/// A failed EC2 call.
pub type Call = CallError<aws_sdk_ec2::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error("cannot change {attribute} of {target} in place")]
    NotInPlace {
        target: String,
        attribute: &'static str,
    },
    #[error(
        "key pair {name:?} does not exist in {region}; fix key_name, or import your public key: \
         aws ec2 import-key-pair --region {region} --key-name {name} --public-key-material fileb://~/.ssh/id_ed25519.pub"
    )]
    NoKeyPair { name: String, region: String },
    #[error(
        "no NixOS image found in {region} for release {release} and architecture {architecture} (owner 427812963091); pick another release or region, or pin an AMI id"
    )]
    NoImage {
        region: String,
        release: String,
        architecture: String,
    },
    #[error(
        "instance type {instance_type} runs {supported}, but the stack asks for {wanted} images"
    )]
    ArchitectureMismatch {
        instance_type: String,
        supported: String,
        wanted: String,
    },
    #[error(
        "instance {id} was terminated while ihp-infra waited for it to run; run apply again to launch a new one"
    )]
    Terminated { id: String },
    #[error(
        "the snapshot {snapshot} of the disk of server {instance} failed; the server is left \
         running: run again to take a new one"
    )]
    SnapshotFailed { snapshot: String, instance: String },
    #[error("timed out after {minutes} minutes waiting for {what}")]
    Timeout { what: String, minutes: u64 },
    #[error("{action} {target}: the response lacks {field}")]
    Incomplete {
        action: &'static str,
        target: String,
        field: &'static str,
    },
}

impl Error {
    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            _ => None,
        }
    }
}

fn incomplete(action: &'static str, target: &str, field: &'static str) -> Error {
    Error::Incomplete {
        action,
        target: target.to_string(),
        field,
    }
}

fn is_code(e: &Error, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// Whether an error says the thing is already gone.
fn is_gone(e: &Error) -> bool {
    e.code().is_some_and(|c| c.ends_with(".NotFound"))
}

pub struct Ec2 {
    client: Client,
    prefix: String,
    budgets: Budgets,
    overlay: Arc<Overlay>,
}

/// Finds what carries stack `prefix`'s tag.
fn stack_filter(prefix: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{STACK_TAG}"))
        .values(prefix)
        .build()
}

/// The address a live resource of stack `prefix` stands for: its role is
/// its Name tag without the prefix. A Name we don't know makes it an
/// unwanted resource, planned for deletion.
fn address_of(prefix: &str, kind: Kind, id: &str, tags: &BTreeMap<String, String>) -> Address {
    let role = tags
        .get("Name")
        .and_then(|n| n.strip_prefix(&format!("{prefix}-")))
        .filter(|r| !r.is_empty())
        .unwrap_or(id);
    Address::new(kind, role)
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn aws_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(aws_tags(tags)))
        .build()
}

/// How many times a call may be sent: the client's budget (ihp-infra's
/// default or the user's `AWS_MAX_ATTEMPTS`), which the creates sent again
/// by ihp-infra itself get too.
pub(super) fn attempts(client: &aws_sdk_ec2::Client) -> u32 {
    client
        .config()
        .retry_config()
        .map_or(crate::retry::DEFAULT_MAX_ATTEMPTS, |r| r.max_attempts())
}

/// SDK settings for one call: no retries of its own (see `create_once`).
fn no_retries() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
}

/// Whether a failed create may have been done by AWS all the same.
fn maybe_done<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    // A second create of the same thing: the first one happened.
    matches!(
        e.code(),
        Some("InvalidSubnet.Conflict" | "InvalidGroup.Duplicate")
    ) || super::service::maybe_done(e)
}

fn attr_bool(value: bool) -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(value).build()
}

fn id_ref(id: Option<&str>) -> Value {
    id.map(|i| Value::Ref(Ref::Id(i.to_string())))
        .unwrap_or(Value::None)
}

/// Flattens AWS's grouped permissions into one rule per peer, so rules
/// compare one by one.
pub fn rules_from(permissions: &[IpPermission]) -> BTreeSet<Item> {
    let mut rules = BTreeSet::new();
    for p in permissions {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let (from_port, to_port) = if protocol == "-1" {
            (-1, -1)
        } else {
            (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))
        };
        let rule = |peer| {
            Item::Rule(Rule {
                protocol: protocol.clone(),
                from_port,
                to_port,
                peer,
            })
        };
        for r in p.ip_ranges() {
            rules.extend(r.cidr_ip().map(|c| rule(Peer::Cidr(c.to_string()))));
        }
        for r in p.ipv6_ranges() {
            rules.extend(r.cidr_ipv6().map(|c| rule(Peer::Cidr6(c.to_string()))));
        }
        for r in p.prefix_list_ids() {
            rules.extend(
                r.prefix_list_id()
                    .map(|c| rule(Peer::PrefixList(c.to_string()))),
            );
        }
        for g in p.user_id_group_pairs() {
            rules.extend(
                g.group_id()
                    .map(|c| rule(Peer::Group(Ref::Id(c.to_string())))),
            );
        }
    }
    rules
}

/// The permission that grants or revokes exactly one rule. Rules carry no
/// description, so a revoke matches what we granted.
fn permission(rule: &Rule) -> IpPermission {
    let b = IpPermission::builder().ip_protocol(&rule.protocol);
    let b = if rule.protocol == "-1" {
        b
    } else {
        b.from_port(rule.from_port).to_port(rule.to_port)
    };
    match &rule.peer {
        Peer::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Peer::Cidr6(c) => b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
        Peer::PrefixList(p) => b.prefix_list_ids(PrefixListId::builder().prefix_list_id(p).build()),
        Peer::Group(Ref::Id(g)) => {
            b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build())
        }
        // The executor resolves references before it calls us.
        Peer::Group(Ref::Pending(_)) => b,
    }
    .build()
}

fn only_rules(items: &BTreeSet<Item>) -> Vec<Rule> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Rule(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Ec2 {
    pub fn new(client: Client, prefix: &str, budgets: Budgets, overlay: Arc<Overlay>) -> Self {
        Ec2 {
            client,
            prefix: prefix.to_string(),
            budgets,
            overlay,
        }
    }

    /// Live tags, with what `adopt` would add (see [`Overlay`]).
    fn tags_of(&self, id: &str, tags: &[Tag]) -> BTreeMap<String, String> {
        self.overlay.tags(id, tag_map(tags))
    }

    fn stack_filter(&self) -> Filter {
        stack_filter(&self.prefix)
    }

    fn address(&self, kind: Kind, id: &str, tags: &BTreeMap<String, String>) -> Address {
        address_of(&self.prefix, kind, id, tags)
    }

    /// Everything of every kind that carries the stack's tag.
    async fn observe(&self) -> Result<Vec<Observed>, Error> {
        let (vpcs, igws, subnets, tables, groups, instances) = tokio::try_join!(
            self.observe_vpcs(),
            self.observe_internet_gateways(),
            self.observe_subnets(),
            self.observe_route_tables(),
            self.observe_security_groups(),
            self.observe_instances(),
        )?;
        Ok([vpcs, igws, subnets, tables, groups, instances].concat())
    }

    async fn observe_vpcs(&self) -> Result<Vec<Observed>, Error> {
        let mut vpcs = self
            .client
            .describe_vpcs()
            .filters(self.stack_filter())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("describe", "vpcs"))?;
        let adopted = self.overlay.ids("vpc-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_vpcs()
                .set_vpc_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "vpcs to adopt"))?;
            merge(&mut vpcs, out.vpcs(), |v| v.vpc_id());
        }
        try_join_all(vpcs.into_iter().map(|vpc| async move {
            let id = vpc.vpc_id().unwrap_or_default().to_string();
            let (dns_support, dns_hostnames) = tokio::try_join!(
                self.vpc_attribute(&id, VpcAttributeName::EnableDnsSupport),
                self.vpc_attribute(&id, VpcAttributeName::EnableDnsHostnames),
            )?;
            let tags = self.tags_of(&id, vpc.tags());
            Ok(Observed {
                address: self.address(Kind::Vpc, &id, &tags),
                attrs: BTreeMap::from([
                    (
                        "cidr_block",
                        Value::Text(vpc.cidr_block().unwrap_or_default().to_string()),
                    ),
                    ("enable_dns_support", Value::Bool(dns_support)),
                    ("enable_dns_hostnames", Value::Bool(dns_hostnames)),
                ]),
                id,
                tags,
            })
        }))
        .await
    }

    async fn vpc_attribute(
        &self,
        vpc_id: &str,
        attribute: VpcAttributeName,
    ) -> Result<bool, Error> {
        let out = self
            .client
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attribute.clone())
            .send()
            .await
            .map_err(Call::on("describe attribute of", vpc_id))?;
        let value = match attribute {
            VpcAttributeName::EnableDnsHostnames => out.enable_dns_hostnames(),
            _ => out.enable_dns_support(),
        };
        Ok(value.and_then(|v| v.value()).unwrap_or(false))
    }

    async fn observe_internet_gateways(&self) -> Result<Vec<Observed>, Error> {
        let mut igws = self
            .client
            .describe_internet_gateways()
            .filters(self.stack_filter())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("describe", "internet gateways"))?;
        let adopted = self.overlay.ids("igw-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_internet_gateways()
                .set_internet_gateway_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "internet gateways to adopt"))?;
            merge(&mut igws, out.internet_gateways(), |v| {
                v.internet_gateway_id()
            });
        }
        Ok(igws
            .into_iter()
            .map(|igw| {
                let id = igw.internet_gateway_id().unwrap_or_default().to_string();
                let tags = self.tags_of(&id, igw.tags());
                let vpc = igw.attachments().iter().find_map(|a| a.vpc_id());
                Observed {
                    address: self.address(Kind::InternetGateway, &id, &tags),
                    attrs: BTreeMap::from([("vpc", id_ref(vpc))]),
                    id,
                    tags,
                }
            })
            .collect())
    }

    async fn observe_subnets(&self) -> Result<Vec<Observed>, Error> {
        let mut subnets = self
            .client
            .describe_subnets()
            .filters(self.stack_filter())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("describe", "subnets"))?;
        let adopted = self.overlay.ids("subnet-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_subnets()
                .set_subnet_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "subnets to adopt"))?;
            merge(&mut subnets, out.subnets(), |v| v.subnet_id());
        }
        Ok(subnets
            .into_iter()
            .map(|s| {
                let id = s.subnet_id().unwrap_or_default().to_string();
                let tags = self.tags_of(&id, s.tags());
                Observed {
                    address: self.address(Kind::Subnet, &id, &tags),
                    attrs: BTreeMap::from([
                        ("vpc", id_ref(s.vpc_id())),
                        (
                            "cidr_block",
                            Value::Text(s.cidr_block().unwrap_or_default().to_string()),
                        ),
                        (
                            "availability_zone",
                            Value::Text(s.availability_zone().unwrap_or_default().to_string()),
                        ),
                        (
                            "map_public_ip_on_launch",
                            Value::Bool(s.map_public_ip_on_launch().unwrap_or(false)),
                        ),
                    ]),
                    id,
                    tags,
                }
            })
            .collect())
    }

    async fn observe_route_tables(&self) -> Result<Vec<Observed>, Error> {
        let mut tables = self
            .client
            .describe_route_tables()
            .filters(self.stack_filter())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("describe", "route tables"))?;
        let adopted = self.overlay.ids("rtb-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_route_tables()
                .set_route_table_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "route tables to adopt"))?;
            merge(&mut tables, out.route_tables(), |v| v.route_table_id());
        }
        Ok(tables
            .into_iter()
            .map(|t| {
                let id = t.route_table_id().unwrap_or_default().to_string();
                let tags = self.tags_of(&id, t.tags());
                let routes = t
                    .routes()
                    .iter()
                    .filter(|r| r.gateway_id() != Some("local"))
                    .filter_map(|r| {
                        let destination = r
                            .destination_cidr_block()
                            .or(r.destination_ipv6_cidr_block())
                            .or(r.destination_prefix_list_id())?;
                        let target = r
                            .gateway_id()
                            .or(r.nat_gateway_id())
                            .or(r.instance_id())
                            .or(r.network_interface_id())
                            .or(r.transit_gateway_id())
                            .or(r.vpc_peering_connection_id())
                            .unwrap_or("(other target)");
                        Some(Item::Route {
                            destination: destination.to_string(),
                            gateway: Ref::Id(target.to_string()),
                        })
                    })
                    .collect();
                let subnets = t
                    .associations()
                    .iter()
                    .filter(|a| !a.main().unwrap_or(false))
                    .filter_map(|a| a.subnet_id())
                    .map(|s| Item::Subnet(Ref::Id(s.to_string())))
                    .collect();
                Observed {
                    address: self.address(Kind::RouteTable, &id, &tags),
                    attrs: BTreeMap::from([
                        ("vpc", id_ref(t.vpc_id())),
                        ("routes", Value::Set(routes)),
                        ("subnets", Value::Set(subnets)),
                    ]),
                    id,
                    tags,
                }
            })
            .collect())
    }

    async fn observe_security_groups(&self) -> Result<Vec<Observed>, Error> {
        let mut groups = self
            .client
            .describe_security_groups()
            .filters(self.stack_filter())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("describe", "security groups"))?;
        let adopted = self.overlay.ids("sg-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_security_groups()
                .set_group_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "security groups to adopt"))?;
            merge(&mut groups, out.security_groups(), |v| v.group_id());
        }
        Ok(groups
            .into_iter()
            .map(|g| {
                let id = g.group_id().unwrap_or_default().to_string();
                let tags = self.tags_of(&id, g.tags());
                Observed {
                    address: self.address(Kind::SecurityGroup, &id, &tags),
                    attrs: BTreeMap::from([
                        ("vpc", id_ref(g.vpc_id())),
                        (
                            "group_name",
                            Value::Text(g.group_name().unwrap_or_default().to_string()),
                        ),
                        (
                            "description",
                            Value::Text(g.description().unwrap_or_default().to_string()),
                        ),
                        ("ingress", Value::Set(rules_from(g.ip_permissions()))),
                        ("egress", Value::Set(rules_from(g.ip_permissions_egress()))),
                    ]),
                    id,
                    tags,
                }
            })
            .collect())
    }

    /// Creates a resource with its tags in the create call itself, so a
    /// crash right after can never leave something we can't find again.
    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<String, super::Error> {
        let (address, tags) = (&change.address, &change.tags);
        let target = address.to_string();
        let need_id = |name: &'static str| {
            attrs
                .id(name)
                .map(str::to_string)
                .ok_or_else(|| incomplete("create", &target, name))
        };
        match address.kind {
            Kind::Vpc => {
                let cidr_block = required(attrs.text("cidr_block"), change, "cidr_block")?;
                let id = self
                    .create_once(
                        address,
                        || {
                            self.client
                                .create_vpc()
                                .cidr_block(cidr_block)
                                .tag_specifications(tag_spec(ResourceType::Vpc, tags))
                                .customize()
                                .config_override(no_retries())
                                .send()
                        },
                        "VpcId",
                        |out| out.vpc().and_then(|v| v.vpc_id()),
                    )
                    .await?;
                // A new VPC has DNS support on and hostnames off.
                if attrs.bool("enable_dns_support") == Some(false) {
                    self.set_vpc_dns(&id, VpcAttributeName::EnableDnsSupport, false)
                        .await?;
                }
                if attrs.bool("enable_dns_hostnames") == Some(true) {
                    self.set_vpc_dns(&id, VpcAttributeName::EnableDnsHostnames, true)
                        .await?;
                }
                Ok(id)
            }
            Kind::InternetGateway => {
                let id = self
                    .create_once(
                        address,
                        || {
                            self.client
                                .create_internet_gateway()
                                .tag_specifications(tag_spec(ResourceType::InternetGateway, tags))
                                .customize()
                                .config_override(no_retries())
                                .send()
                        },
                        "InternetGatewayId",
                        |out| out.internet_gateway().and_then(|g| g.internet_gateway_id()),
                    )
                    .await?;
                if let Some(vpc) = attrs.id("vpc") {
                    self.attach_gateway(&id, vpc).await?;
                }
                Ok(id)
            }
            Kind::Subnet => {
                let vpc = need_id("vpc")?;
                let id = self
                    .create_once(
                        address,
                        || {
                            retry(NotYet::NotVisible, self.budgets.visibility, || {
                                self.client
                                    .create_subnet()
                                    .vpc_id(&vpc)
                                    .cidr_block(attrs.text("cidr_block").unwrap_or_default())
                                    .availability_zone(
                                        attrs.text("availability_zone").unwrap_or_default(),
                                    )
                                    .tag_specifications(tag_spec(ResourceType::Subnet, tags))
                                    .customize()
                                    .config_override(no_retries())
                                    .send()
                            })
                        },
                        "SubnetId",
                        |out| out.subnet().and_then(|s| s.subnet_id()),
                    )
                    .await?;
                if attrs.bool("map_public_ip_on_launch") == Some(true) {
                    self.set_map_public_ip(&id, true).await?;
                }
                Ok(id)
            }
            Kind::RouteTable => {
                let vpc = need_id("vpc")?;
                let id = self
                    .create_once(
                        address,
                        || {
                            retry(NotYet::NotVisible, self.budgets.visibility, || {
                                self.client
                                    .create_route_table()
                                    .vpc_id(&vpc)
                                    .tag_specifications(tag_spec(ResourceType::RouteTable, tags))
                                    .customize()
                                    .config_override(no_retries())
                                    .send()
                            })
                        },
                        "RouteTableId",
                        |out| out.route_table().and_then(|t| t.route_table_id()),
                    )
                    .await?;
                self.sync_routes(&id, &BTreeSet::new(), &attrs.set("routes"))
                    .await?;
                self.sync_associations(&id, &BTreeSet::new(), &attrs.set("subnets"))
                    .await?;
                Ok(id)
            }
            Kind::SecurityGroup => {
                let vpc = need_id("vpc")?;
                let id = self
                    .create_once(
                        address,
                        || {
                            retry(NotYet::NotVisible, self.budgets.visibility, || {
                                self.client
                                    .create_security_group()
                                    .vpc_id(&vpc)
                                    .group_name(attrs.text("group_name").unwrap_or_default())
                                    .description(attrs.text("description").unwrap_or_default())
                                    .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
                                    .customize()
                                    .config_override(no_retries())
                                    .send()
                            })
                        },
                        "GroupId",
                        |out| out.group_id(),
                    )
                    .await?;
                // A new group lets everything out: that rule is AWS's, not ours.
                let aws_default = BTreeSet::from([Item::Rule(Rule::all_traffic(Peer::Cidr(
                    ANYWHERE.to_string(),
                )))]);
                self.sync_rules(
                    &id,
                    Direction::Ingress,
                    &BTreeSet::new(),
                    &attrs.set("ingress"),
                )
                .await?;
                self.sync_rules(&id, Direction::Egress, &aws_default, &attrs.set("egress"))
                    .await?;
                Ok(id)
            }
            Kind::Instance => Ok(self.create_instance(change, attrs).await?),
            kind => Err(super::Error::Unrouted { kind }),
        }
    }

    /// Sends a create EC2 can't make idempotent (no client token: VPC,
    /// subnet, gateway, route table, security group). If AWS did it but the
    /// answer was lost, sending it again would make a second one (or a
    /// conflict), so the SDK must not resend it on its own (`no_retries`):
    /// after an answer that may hide a done create, the resource is looked
    /// for by its tags (set in the create call itself) and only sent again
    /// if it isn't there. Throttling means not done: just send again.
    /// Returns the new resource's id: `id_of` the answer (its `field`), or
    /// the one found by tags.
    async fn create_once<O, E, Fut>(
        &self,
        address: &Address,
        send: impl FnMut() -> Fut,
        field: &'static str,
        id_of: impl Fn(&O) -> Option<&str>,
    ) -> Result<String, Error>
    where
        Fut: std::future::Future<
                Output = Result<O, SdkError<E, aws_smithy_runtime_api::http::Response>>,
            >,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        aws_sdk_ec2::Error: From<SdkError<E, aws_smithy_runtime_api::http::Response>>,
    {
        let target = address.to_string();
        create_once_found_by(&target, attempts(&self.client), send, field, id_of, || {
            self.find(address)
        })
        .await
    }

    /// The live resource at `address`, found by its tags.
    async fn find(&self, address: &Address) -> Result<Option<String>, Error> {
        let live = match address.kind {
            Kind::Vpc => self.observe_vpcs().await?,
            Kind::InternetGateway => self.observe_internet_gateways().await?,
            Kind::Subnet => self.observe_subnets().await?,
            Kind::RouteTable => self.observe_route_tables().await?,
            Kind::SecurityGroup => self.observe_security_groups().await?,
            _ => return Ok(None),
        };
        Ok(live
            .into_iter()
            .find(|o| &o.address == address)
            .map(|o| o.id))
    }

    /// Applies the changed attributes of a live resource.
    async fn update(
        &self,
        address: &Address,
        id: &str,
        changes: &[AttrChange],
    ) -> Result<(), Error> {
        for change in changes {
            let empty = BTreeSet::new();
            let before = match &change.before {
                Some(Value::Set(s)) => s,
                _ => &empty,
            };
            let after = match &change.after {
                Value::Set(s) => s,
                _ => &empty,
            };
            match (address.kind, change.name, &change.after) {
                (_, "tags", _) => {
                    self.client
                        .create_tags()
                        .resources(id)
                        .set_tags(Some(aws_tags(&change.added_tags())))
                        .send()
                        .await
                        .map_err(Call::on("tag", id))?;
                }
                (Kind::Vpc, "enable_dns_support", Value::Bool(b)) => {
                    self.set_vpc_dns(id, VpcAttributeName::EnableDnsSupport, *b)
                        .await?
                }
                (Kind::Vpc, "enable_dns_hostnames", Value::Bool(b)) => {
                    self.set_vpc_dns(id, VpcAttributeName::EnableDnsHostnames, *b)
                        .await?
                }
                (Kind::Subnet, "map_public_ip_on_launch", Value::Bool(b)) => {
                    self.set_map_public_ip(id, *b).await?
                }
                (Kind::InternetGateway, "vpc", after) => {
                    if let Some(Value::Ref(Ref::Id(old))) = &change.before {
                        self.detach_gateway(id, old).await?;
                    }
                    if let Value::Ref(Ref::Id(new)) = after {
                        self.attach_gateway(id, new).await?;
                    }
                }
                (Kind::RouteTable, "routes", _) => self.sync_routes(id, before, after).await?,
                (Kind::RouteTable, "subnets", _) => {
                    self.sync_associations(id, before, after).await?
                }
                (Kind::SecurityGroup, "ingress", _) => {
                    self.sync_rules(id, Direction::Ingress, before, after)
                        .await?
                }
                (Kind::SecurityGroup, "egress", _) => {
                    self.sync_rules(id, Direction::Egress, before, after)
                        .await?
                }
                (Kind::Instance, name, _) if self.update_instance(id, change, changes).await? => {
                    tracing::debug!(instance = id, attribute = name, "updated");
                }
                (kind, name, _) => {
                    // The plan marks everything else as forcing replacement.
                    return Err(Error::NotInPlace {
                        target: format!("{kind} {id}"),
                        attribute: name,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes; for a server whose disk is kept, returns its snapshot.
    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        if change.address.kind == Kind::Instance {
            let keep_disk = change.data_on_delete == Some(DataOnDelete::DiskSnapshot);
            return Ok(self.delete_instance(id, keep_disk).await?);
        }
        self.delete_other(&change.address, id).await.map(|()| None)
    }

    async fn delete_other(&self, address: &Address, id: &str) -> Result<(), super::Error> {
        let target = format!("{address} {id}");
        let result = match address.kind {
            Kind::Vpc => {
                // A gateway still attached (e.g. left by an interrupted run) blocks the delete.
                for igw in self.gateways_of(id).await? {
                    self.detach_gateway(&igw, id).await?;
                }
                retry(NotYet::DependencyViolation, self.budgets.dependency, || {
                    self.client.delete_vpc().vpc_id(id).send()
                })
                .await
                .map(drop)
                .map_err(|e| Call::on("delete", &target)(e).into())
            }
            Kind::InternetGateway => {
                for vpc in self.attachments_of(id).await? {
                    self.detach_gateway(id, &vpc).await?;
                }
                retry(NotYet::DependencyViolation, self.budgets.dependency, || {
                    self.client
                        .delete_internet_gateway()
                        .internet_gateway_id(id)
                        .send()
                })
                .await
                .map(drop)
                .map_err(|e| Call::on("delete", &target)(e).into())
            }
            Kind::Subnet => retry(NotYet::DependencyViolation, self.budgets.dependency, || {
                self.client.delete_subnet().subnet_id(id).send()
            })
            .await
            .map(drop)
            .map_err(|e| Call::on("delete", &target)(e).into()),
            Kind::RouteTable => {
                for association in self.association_ids(id, None).await? {
                    self.disassociate(&association).await?;
                }
                retry(NotYet::DependencyViolation, self.budgets.dependency, || {
                    self.client.delete_route_table().route_table_id(id).send()
                })
                .await
                .map(drop)
                .map_err(|e| Call::on("delete", &target)(e).into())
            }
            Kind::SecurityGroup => {
                self.revoke_references_to(id).await?;
                retry(NotYet::DependencyViolation, self.budgets.dependency, || {
                    self.client.delete_security_group().group_id(id).send()
                })
                .await
                .map(drop)
                .map_err(|e| Call::on("delete", &target)(e).into())
            }
            // Instances go through `delete_instance`; others aren't EC2's.
            kind => return Err(super::Error::Unrouted { kind }),
        };
        match result {
            // Already gone: a delete interrupted after AWS took it, or done by hand.
            Err(e) if is_gone(&e) => Ok(()),
            other => Ok(other?),
        }
    }

    async fn set_vpc_dns(
        &self,
        vpc: &str,
        attribute: VpcAttributeName,
        value: bool,
    ) -> Result<(), Error> {
        retry(NotYet::NotVisible, self.budgets.visibility, || {
            let call = self.client.modify_vpc_attribute().vpc_id(vpc);
            match attribute {
                VpcAttributeName::EnableDnsHostnames => call.enable_dns_hostnames(attr_bool(value)),
                _ => call.enable_dns_support(attr_bool(value)),
            }
            .send()
        })
        .await
        .map(drop)
        .map_err(|e| Call::on("set DNS attribute of", vpc)(e).into())
    }

    async fn set_map_public_ip(&self, subnet: &str, value: bool) -> Result<(), Error> {
        retry(NotYet::NotVisible, self.budgets.visibility, || {
            self.client
                .modify_subnet_attribute()
                .subnet_id(subnet)
                .map_public_ip_on_launch(attr_bool(value))
                .send()
        })
        .await
        .map(drop)
        .map_err(|e| Call::on("set map-public-ip of", subnet)(e).into())
    }

    async fn attach_gateway(&self, igw: &str, vpc: &str) -> Result<(), Error> {
        let result = retry(NotYet::NotVisible, self.budgets.visibility, || {
            self.client
                .attach_internet_gateway()
                .internet_gateway_id(igw)
                .vpc_id(vpc)
                .send()
        })
        .await
        .map(drop)
        .map_err(|e| Call::on("attach", format!("internet gateway {igw} to {vpc}"))(e).into());
        match result {
            Err(e) if is_code(&e, &["Resource.AlreadyAssociated"]) => Ok(()),
            other => other,
        }
    }

    async fn detach_gateway(&self, igw: &str, vpc: &str) -> Result<(), Error> {
        // Fails with DependencyViolation while public addresses are mapped in the VPC.
        let result = retry(NotYet::DependencyViolation, self.budgets.dependency, || {
            self.client
                .detach_internet_gateway()
                .internet_gateway_id(igw)
                .vpc_id(vpc)
                .send()
        })
        .await
        .map(drop)
        .map_err(|e| Call::on("detach", format!("internet gateway {igw} from {vpc}"))(e).into());
        match result {
            Err(e) if is_gone(&e) || is_code(&e, &["Gateway.NotAttached"]) => Ok(()),
            other => other,
        }
    }

    async fn gateways_of(&self, vpc: &str) -> Result<Vec<String>, Error> {
        let igws = self
            .client
            .describe_internet_gateways()
            .filters(
                Filter::builder()
                    .name("attachment.vpc-id")
                    .values(vpc)
                    .build(),
            )
            .send()
            .await
            .map_err(Call::on("describe gateways of", vpc))?;
        Ok(igws
            .internet_gateways()
            .iter()
            .filter_map(|g| g.internet_gateway_id().map(str::to_string))
            .collect())
    }

    async fn attachments_of(&self, igw: &str) -> Result<Vec<String>, Error> {
        let out = self
            .client
            .describe_internet_gateways()
            .internet_gateway_ids(igw)
            .send()
            .await;
        let out = match out.map_err(|e| Call::on("describe", igw)(e).into()) {
            Err(e) if is_gone(&e) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(out
            .internet_gateways()
            .iter()
            .flat_map(|g| g.attachments())
            .filter_map(|a| a.vpc_id().map(str::to_string))
            .collect())
    }

    async fn sync_routes(
        &self,
        table: &str,
        before: &BTreeSet<Item>,
        after: &BTreeSet<Item>,
    ) -> Result<(), Error> {
        for item in before.difference(after) {
            if let Item::Route { destination, .. } = item {
                let result = self
                    .client
                    .delete_route()
                    .route_table_id(table)
                    .destination_cidr_block(destination)
                    .send()
                    .await
                    .map_err(|e| Call::on("delete route from", table)(e).into());
                match result {
                    Err(e) if is_gone(&e) => {}
                    other => other.map(drop)?,
                }
            }
        }
        for item in after.difference(before) {
            if let Item::Route {
                destination,
                gateway: Ref::Id(gateway),
            } = item
            {
                let result = retry(NotYet::NotVisible, self.budgets.visibility, || {
                    self.client
                        .create_route()
                        .route_table_id(table)
                        .destination_cidr_block(destination)
                        .gateway_id(gateway)
                        .send()
                })
                .await
                .map_err(|e| Call::on("create route in", table)(e).into());
                match result {
                    // Same destination, other target (e.g. the old gateway): point it at ours.
                    Err(e) if is_code(&e, &["RouteAlreadyExists"]) => {
                        self.client
                            .replace_route()
                            .route_table_id(table)
                            .destination_cidr_block(destination)
                            .gateway_id(gateway)
                            .send()
                            .await
                            .map_err(Call::on("replace route in", table))?;
                    }
                    other => other.map(drop)?,
                }
            }
        }
        Ok(())
    }

    /// Association ids of a route table, of one subnet or of all subnets.
    async fn association_ids(
        &self,
        table: &str,
        subnet: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let out = self
            .client
            .describe_route_tables()
            .route_table_ids(table)
            .send()
            .await;
        let out = match out.map_err(|e| Call::on("describe", table)(e).into()) {
            Err(e) if is_gone(&e) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(out
            .route_tables()
            .iter()
            .flat_map(|t| t.associations())
            .filter(|a| !a.main().unwrap_or(false))
            .filter(|a| subnet.is_none() || a.subnet_id() == subnet)
            .filter_map(|a| a.route_table_association_id().map(str::to_string))
            .collect())
    }

    async fn disassociate(&self, association: &str) -> Result<(), Error> {
        let result = self
            .client
            .disassociate_route_table()
            .association_id(association)
            .send()
            .await
            .map_err(|e| Call::on("disassociate", association)(e).into());
        match result {
            Err(e) if is_gone(&e) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn sync_associations(
        &self,
        table: &str,
        before: &BTreeSet<Item>,
        after: &BTreeSet<Item>,
    ) -> Result<(), Error> {
        for item in before.difference(after) {
            if let Item::Subnet(Ref::Id(subnet)) = item {
                for association in self.association_ids(table, Some(subnet)).await? {
                    self.disassociate(&association).await?;
                }
            }
        }
        for item in after.difference(before) {
            if let Item::Subnet(Ref::Id(subnet)) = item {
                let result = retry(NotYet::NotVisible, self.budgets.visibility, || {
                    self.client
                        .associate_route_table()
                        .route_table_id(table)
                        .subnet_id(subnet)
                        .send()
                })
                .await
                .map_err(|e| {
                    Call::on("associate", format!("route table {table} with {subnet}"))(e).into()
                });
                match result {
                    Err(e) if is_code(&e, &["Resource.AlreadyAssociated"]) => {}
                    other => other.map(drop)?,
                }
            }
        }
        Ok(())
    }

    async fn sync_rules(
        &self,
        group: &str,
        direction: Direction,
        before: &BTreeSet<Item>,
        after: &BTreeSet<Item>,
    ) -> Result<(), Error> {
        let grant: Vec<IpPermission> = only_rules(&after.difference(before).cloned().collect())
            .iter()
            .map(permission)
            .collect();
        let revoke: Vec<IpPermission> = only_rules(&before.difference(after).cloned().collect())
            .iter()
            .map(permission)
            .collect();
        // Grant first: a rule changed in place never leaves a moment with neither.
        if !grant.is_empty() {
            let result = retry(NotYet::NotVisible, self.budgets.visibility, || async {
                match direction {
                    Direction::Ingress => self
                        .client
                        .authorize_security_group_ingress()
                        .group_id(group)
                        .set_ip_permissions(Some(grant.clone()))
                        .send()
                        .await
                        .map(drop)
                        .map_err(aws_sdk_ec2::Error::from),
                    Direction::Egress => self
                        .client
                        .authorize_security_group_egress()
                        .group_id(group)
                        .set_ip_permissions(Some(grant.clone()))
                        .send()
                        .await
                        .map(drop)
                        .map_err(aws_sdk_ec2::Error::from),
                }
            })
            .await;
            match result {
                Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {
                    // Some are there already (an interrupted run): grant one by one.
                    for p in &grant {
                        self.grant_one(group, direction, p).await?;
                    }
                }
                other => other.map_err(|source| Call {
                    action: "authorize rules of",
                    target: group.to_string(),
                    source: Box::new(source),
                })?,
            }
        }
        if !revoke.is_empty() {
            let result = match direction {
                Direction::Ingress => self
                    .client
                    .revoke_security_group_ingress()
                    .group_id(group)
                    .set_ip_permissions(Some(revoke))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Call::on("revoke rules of", group)(e).into()),
                Direction::Egress => self
                    .client
                    .revoke_security_group_egress()
                    .group_id(group)
                    .set_ip_permissions(Some(revoke))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Call::on("revoke rules of", group)(e).into()),
            };
            match result {
                Err(e) if is_code(&e, &["InvalidPermission.NotFound"]) => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn grant_one(
        &self,
        group: &str,
        direction: Direction,
        p: &IpPermission,
    ) -> Result<(), Error> {
        let result = match direction {
            Direction::Ingress => self
                .client
                .authorize_security_group_ingress()
                .group_id(group)
                .ip_permissions(p.clone())
                .send()
                .await
                .map(drop)
                .map_err(|e| Call::on("authorize rule of", group)(e).into()),
            Direction::Egress => self
                .client
                .authorize_security_group_egress()
                .group_id(group)
                .ip_permissions(p.clone())
                .send()
                .await
                .map(drop)
                .map_err(|e| Call::on("authorize rule of", group)(e).into()),
        };
        match result {
            Err(e) if is_code(&e, &["InvalidPermission.Duplicate"]) => Ok(()),
            other => other,
        }
    }

    /// Revokes the rules of the stack's other groups that name this group,
    /// which would otherwise block its delete (e.g. the database group's
    /// ingress from the app group, when the app group is replaced).
    async fn revoke_references_to(&self, group: &str) -> Result<(), Error> {
        let groups = self
            .client
            .describe_security_groups()
            .filters(self.stack_filter())
            .send()
            .await
            .map_err(Call::on("describe", "security groups"))?;
        let names_group = |item: &Item| matches!(item, Item::Rule(Rule { peer: Peer::Group(Ref::Id(g)), .. }) if g == group);
        for other in groups.security_groups() {
            let Some(other_id) = other.group_id() else {
                continue;
            };
            if other_id == group {
                continue;
            }
            for (direction, permissions) in [
                (Direction::Ingress, other.ip_permissions()),
                (Direction::Egress, other.ip_permissions_egress()),
            ] {
                let referencing: BTreeSet<Item> = rules_from(permissions)
                    .into_iter()
                    .filter(names_group)
                    .collect();
                if !referencing.is_empty() {
                    self.sync_rules(other_id, direction, &referencing, &BTreeSet::new())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// [`Ec2::create_once`] for a create whose result `find` looks for (by the
/// tags set in the create call itself).
pub(super) async fn create_once_found_by<O, E, Fut, Found>(
    target: &str,
    attempts: u32,
    mut send: impl FnMut() -> Fut,
    field: &'static str,
    id_of: impl Fn(&O) -> Option<&str>,
    find: impl Fn() -> Found,
) -> Result<String, Error>
where
    Fut: std::future::Future<Output = Result<O, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
    Found: std::future::Future<Output = Result<Option<String>, Error>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    aws_sdk_ec2::Error: From<SdkError<E, aws_smithy_runtime_api::http::Response>>,
{
    let mut waits = crate::retry::resend_waits(attempts);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match send().await {
            Ok(out) => {
                return id_of(&out)
                    .map(str::to_string)
                    .ok_or_else(|| incomplete("create", target, field));
            }
            Err(e) => e,
        };
        let wait = waits.next();
        let last = wait.is_none();
        if maybe_done(&e) {
            // EC2's describe calls may lag its creates by a moment: look
            // a few times before concluding the create was not done.
            for look in 0..3 {
                if look > 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                if let Some(id) = find().await? {
                    tracing::info!(resource = %target, id, "create answered with a fault, but AWS made it: found by its tags");
                    calls::survived_fault();
                    return Ok(id);
                }
            }
            if last
                || matches!(
                    e.code(),
                    Some("InvalidSubnet.Conflict" | "InvalidGroup.Duplicate")
                )
            {
                return Err(Call::on("create", target)(e).into());
            }
        } else if !super::is_throttle(e.code()) || last {
            return Err(Call::on("create", target)(e).into());
        }
        tracing::info!(resource = %target, attempt, "create not done (fault); sending it again");
        calls::survived_fault();
        tokio::time::sleep(wait.unwrap_or_default()).await;
    }
}

#[async_trait]
impl Service for Ec2 {
    fn kinds(&self) -> &'static [Kind] {
        &[
            Kind::Vpc,
            Kind::InternetGateway,
            Kind::Subnet,
            Kind::SecurityGroup,
            Kind::RouteTable,
            Kind::Instance,
        ]
    }

    /// Found by the stack tag alone: EC2 filters by tags.
    async fn observe(&self, _wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        Ok(self.observe().await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        Ok(Created::id(self.create(change, attrs).await?))
    }

    async fn update(
        &self,
        change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        Ok(self.update(&change.address, id, attrs).await?)
    }

    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, super::Error> {
        self.delete(change, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_permissions_flatten_to_single_rules() {
        let p = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-1").build())
            .build();
        let all = IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let rules: Vec<String> = rules_from(&[p, all])
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rules,
            [
                "all traffic 0.0.0.0/0",
                "tcp/22 0.0.0.0/0",
                "tcp/22 10.0.0.0/8",
                "tcp/22 group sg-1",
            ]
        );
    }

    #[test]
    fn permission_round_trips_a_rule() {
        for rule in [
            Rule::tcp(5432, Peer::Group(Ref::Id("sg-9".into()))),
            Rule::tcp(443, Peer::Cidr("0.0.0.0/0".into())),
            Rule::all_traffic(Peer::Cidr("0.0.0.0/0".into())),
            Rule::tcp(80, Peer::Cidr6("::/0".into())),
        ] {
            let back = rules_from(&[permission(&rule)]);
            assert_eq!(back, BTreeSet::from([Item::Rule(rule)]));
        }
    }
}
