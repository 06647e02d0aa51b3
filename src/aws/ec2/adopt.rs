//! What `adopt` finds of a server and its network: from the server (or
//! the database's VPC) to the VPC, its gateway, subnets, route table and
//! security groups, each mapped to the role ihp-infra gives it by what it
//! is (a subnet by its CIDR block), not by what it is called.

use std::collections::BTreeMap;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;

use super::instance::root_volume;
use super::{Call, Ec2, Error, aws_tags, tag_map};
use crate::adopt::Live;
use crate::desired;
use crate::model::{Address, Value};

/// A live resource adopt found, with its tags.
#[derive(Clone, Debug)]
pub struct Found {
    pub address: Address,
    pub id: String,
    pub tags: BTreeMap<String, String>,
}

/// The network and server adopt found, and why what it found can't be
/// taken over as it is.
#[derive(Debug, Default)]
pub struct Network {
    pub found: Vec<Found>,
    pub live: Live,
    pub problems: Vec<String>,
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

impl Ec2 {
    /// The server the boilerplate's Terraform names `<prefix>-ihp_app`,
    /// or the one an earlier adopt (or apply) tagged as the stack's.
    pub async fn find_boilerplate_server(&self) -> Result<Vec<String>, Error> {
        let states = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(
                ["pending", "running", "stopping", "stopped"]
                    .map(String::from)
                    .to_vec(),
            ))
            .build();
        let mut ids = Vec::new();
        for names in [
            vec![filter("tag:Name", &format!("{}-ihp_app", self.prefix))],
            vec![
                filter("tag:Name", &format!("{}-app", self.prefix)),
                self.stack_filter(),
            ],
        ] {
            let out = self
                .client
                .describe_instances()
                .set_filters(Some(names))
                .filters(states.clone())
                .send()
                .await
                .map_err(Call::on("describe", "instances"))?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                if let Some(id) = i.instance_id()
                    && !ids.iter().any(|k| k == id)
                {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// Follows the server `instance` (or, without one, VPC `vpc`) to the
    /// network around it. `db_groups` are the database's security groups.
    pub async fn discover(
        &self,
        instance: Option<&str>,
        vpc: Option<&str>,
        db_groups: &[String],
        az_1: &str,
        az_2: &str,
    ) -> Result<Network, Error> {
        let mut net = Network::default();
        let mut vpc = vpc.map(str::to_string);
        let mut server_subnet = None;
        let mut app_groups = Vec::new();
        if let Some(id) = instance {
            let out = self
                .client
                .describe_instances()
                .instance_ids(id)
                .send()
                .await;
            let out = match out {
                Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => {
                    net.problems.push(format!("there is no server {id}"));
                    return Ok(net);
                }
                other => other.map_err(Call::on("describe", id))?,
            };
            let Some(i) = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| {
                    !matches!(
                        i.state().and_then(|s| s.name()).map(|s| s.as_str()),
                        Some("terminated" | "shutting-down")
                    )
                })
            else {
                net.problems.push(format!("server {id} is terminated"));
                return Ok(net);
            };
            match (&vpc, i.vpc_id()) {
                (Some(a), Some(b)) if a != b => net.problems.push(format!(
                    "server {id} is in {b} and the database in {a}: ihp-infra keeps both in one VPC, and neither can move without being replaced"
                )),
                _ => vpc = i.vpc_id().map(str::to_string),
            }
            server_subnet = i.subnet_id().map(str::to_string);
            app_groups = i
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect();
            net.live.image_id = i.image_id().map(str::to_string);
            net.live.instance_type = i.instance_type().map(|t| t.as_str().to_string());
            let root = root_volume(i);
            if let Some(volume) = root {
                let (size, encrypted, _) = self.volume(volume).await?;
                net.live.root_volume_size = match size {
                    Value::Int(gb) => i32::try_from(gb).ok(),
                    _ => None,
                };
                net.live.root_volume_encrypted = match encrypted {
                    Value::Bool(e) => Some(e),
                    _ => None,
                };
            }
            net.found.push(Found {
                address: desired::instance(),
                id: id.to_string(),
                tags: tag_map(i.tags()),
            });
            let eips = self
                .client
                .describe_addresses()
                .filters(filter("instance-id", id))
                .send()
                .await
                .map_err(Call::on("describe elastic IPs of", id))?;
            if let Some(a) = eips.addresses().first()
                && let Some(allocation) = a.allocation_id()
            {
                net.found.push(Found {
                    address: desired::elastic_ip(),
                    id: allocation.to_string(),
                    tags: tag_map(a.tags()),
                });
            }
        }
        let Some(vpc) = vpc else {
            net.problems
                .push("found neither a server nor a database to start from".into());
            return Ok(net);
        };
        let out = self
            .client
            .describe_vpcs()
            .vpc_ids(&vpc)
            .send()
            .await
            .map_err(Call::on("describe", &vpc))?;
        let Some(v) = out.vpcs().first() else {
            net.problems.push(format!("there is no VPC {vpc}"));
            return Ok(net);
        };
        if v.cidr_block() != Some(desired::VPC_CIDR) || v.is_default() == Some(true) {
            net.problems.push(format!(
                "VPC {vpc} ({}{}) is not laid out as ihp-infra's network ({}): the server and database can't move to another VPC without being replaced. Make a snapshot of the database and restore it into a stack ihp-infra makes",
                v.cidr_block().unwrap_or("?"),
                if v.is_default() == Some(true) {
                    ", the region's default VPC"
                } else {
                    ""
                },
                desired::VPC_CIDR
            ));
            return Ok(net);
        }
        net.found.push(Found {
            address: desired::vpc(),
            id: vpc.clone(),
            tags: tag_map(v.tags()),
        });
        let (igws, subnets, groups) = tokio::try_join!(
            async {
                self.client
                    .describe_internet_gateways()
                    .filters(filter("attachment.vpc-id", &vpc))
                    .send()
                    .await
                    .map_err(Call::on("describe internet gateways of", &vpc))
            },
            async {
                self.client
                    .describe_subnets()
                    .filters(filter("vpc-id", &vpc))
                    .send()
                    .await
                    .map_err(Call::on("describe subnets of", &vpc))
            },
            async {
                let ids: Vec<String> = app_groups.iter().chain(db_groups).cloned().collect();
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(self
                    .client
                    .describe_security_groups()
                    .set_group_ids(Some(ids))
                    .send()
                    .await
                    .map_err(Call::on("describe security groups of", &vpc))?
                    .security_groups()
                    .to_vec())
            },
        )?;
        match igws.internet_gateways() {
            [] => {}
            [g] => net.found.push(Found {
                address: desired::internet_gateway(),
                id: g.internet_gateway_id().unwrap_or_default().to_string(),
                tags: tag_map(g.tags()),
            }),
            many => net.problems.push(format!(
                "VPC {vpc} has {} internet gateways: {}",
                many.len(),
                many.iter()
                    .filter_map(|g| g.internet_gateway_id())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        let mut public_subnet = None;
        for (address, cidr, az) in [
            (desired::public_subnet(), "10.0.1.0/24", az_1),
            (desired::private_subnet(1), "10.0.2.0/24", az_1),
            (desired::private_subnet(2), "10.0.3.0/24", az_2),
        ] {
            let Some(s) = subnets
                .subnets()
                .iter()
                .find(|s| s.cidr_block() == Some(cidr))
            else {
                continue;
            };
            let id = s.subnet_id().unwrap_or_default().to_string();
            if s.availability_zone() != Some(az) {
                net.problems.push(format!(
                    "subnet {id} ({cidr}, {address}) is in {}, but the stack file puts it in {az}: set {} to {}",
                    s.availability_zone().unwrap_or("?"),
                    if address == desired::private_subnet(2) {
                        "az_2"
                    } else {
                        "az_1"
                    },
                    s.availability_zone().unwrap_or("?"),
                ));
            }
            if address == desired::public_subnet() {
                public_subnet = Some(id.clone());
            }
            net.found.push(Found {
                address,
                id,
                tags: tag_map(s.tags()),
            });
        }
        if let Some(subnet) = &server_subnet
            && public_subnet.as_ref() != Some(subnet)
        {
            net.problems.push(format!(
                "the server is in subnet {subnet}, not in {vpc}'s 10.0.1.0/24: ihp-infra's server is in that public subnet, and a server can't change subnets without being replaced"
            ));
        }
        if let Some(subnet) = &public_subnet {
            let tables = self
                .client
                .describe_route_tables()
                .filters(filter("association.subnet-id", subnet))
                .send()
                .await
                .map_err(Call::on("describe route tables of", subnet))?;
            if let Some(t) = tables.route_tables().first() {
                net.found.push(Found {
                    address: desired::public_route_table(),
                    id: t.route_table_id().unwrap_or_default().to_string(),
                    tags: tag_map(t.tags()),
                });
            }
        }
        for (address, ids, whose) in [
            (desired::app_security_group(), &app_groups, "the server"),
            (
                desired::db_security_group(),
                &db_groups.to_vec(),
                "the database",
            ),
        ] {
            match ids.as_slice() {
                [] => {}
                [id] => {
                    let Some(g) = groups.iter().find(|g| g.group_id() == Some(id)) else {
                        continue;
                    };
                    if net.found.iter().any(|f| &f.id == id) {
                        net.problems.push(format!(
                            "the server and the database share security group {id}; ihp-infra gives each its own (the database's lets in only the server's)"
                        ));
                        continue;
                    }
                    net.found.push(Found {
                        address,
                        id: id.clone(),
                        tags: tag_map(g.tags()),
                    });
                }
                many => net.problems.push(format!(
                    "{whose} has {} security groups ({}); ihp-infra manages one: remove the others from it first",
                    many.len(),
                    many.join(", ")
                )),
            }
        }
        Ok(net)
    }

    /// Adds `tags` to the EC2 resource `id`.
    pub async fn add_tags(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), Error> {
        self.client
            .create_tags()
            .resources(id)
            .set_tags(Some(aws_tags(tags)))
            .send()
            .await
            .map_err(Call::on("tag", id))?;
        Ok(())
    }
}
