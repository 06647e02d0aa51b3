//! EC2 instances: the NixOS app server, its image, key pair and disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, Instance,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    ResourceType, SnapshotState, VolumeType,
};
use sha2::{Digest, Sha256};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::IamInstanceProfileSpecification;

use super::{
    Call, Ec2, Error, create_once_found_by, incomplete, is_gone, no_retries, tag_map, tag_spec,
};
use crate::aws::overlay::merge;
use crate::aws::service::required;
use crate::desired::Image;
use crate::model::{Attrs, Item, Kind, Observed, Ref, Value};
use crate::plan::{AttrChange, Change};
use crate::retry::{profile_not_ready, retry_if};
use crate::stack::ImageChoice;

/// Owner of the official NixOS images.
pub const NIXOS_OWNER: &str = "427812963091";
/// The tag on the server that records which image choice it was made from.
pub const IMAGE_TAG: &str = "ihp-infra:image";
const ROOT_DEVICE: &str = "/dev/xvda";
const INSTANCE_WAIT: Duration = Duration::from_secs(15 * 60);
/// A first snapshot copies the whole disk: minutes for a few dozen GB.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60 * 60);
/// The server a kept disk snapshot was taken of (its instance id), and the
/// stack: not `ihp-infra:stack`, as the snapshot is no resource of the stack
/// and outlives it.
const SNAPSHOT_OF: &str = "ihp-infra:disk-of";
const SNAPSHOT_STACK: &str = "ihp-infra:kept-from-stack";

/// The id of the volume a server boots from.
pub(super) fn root_volume(i: &Instance) -> Option<&str> {
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == i.root_device_name())
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
}

/// The idempotency token of a launch. Same stack, role, image choice,
/// earlier servers and UTC day: same token, so a retried launch returns the
/// server it already started. A deliberate replacement (or a server
/// terminated by hand) adds an earlier server to the list, so it gets a new
/// token: AWS would answer a reused token with the old, terminated server.
/// The day covers the case where a terminated server has dropped out of
/// DescribeInstances (after about an hour) and so out of the list.
pub fn client_token(
    prefix: &str,
    role: &str,
    image_choice: &str,
    earlier: &[String],
    day: &str,
) -> String {
    let mut earlier = earlier.to_vec();
    earlier.sort();
    let mut h = Sha256::new();
    for part in [prefix, role, image_choice, day] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for id in &earlier {
        h.update(id.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("ihp-infra-{}", &hex[..40])
}

/// Where the running server is, and what it runs.
pub struct ServerAddress {
    pub id: String,
    pub dns: String,
    pub ip: Option<String>,
    /// `x86_64-linux` or `aarch64-linux`.
    pub system: Option<String>,
}

/// The architecture name NixOS uses in image names.
fn nixos_system(architecture: &str) -> &'static str {
    if architecture == "arm64" {
        "aarch64-linux"
    } else {
        "x86_64-linux"
    }
}

impl Ec2 {
    /// Fails clearly when the key pair is missing in the region.
    pub async fn check_key_pair(&self, name: &str, region: &str) -> Result<(), Error> {
        let result = self
            .client
            .describe_key_pairs()
            .key_names(name)
            .send()
            .await;
        match result.map_err(Call::on("describe key pair", name)) {
            Ok(out) if !out.key_pairs().is_empty() => Ok(()),
            Ok(_) => Err(Error::NoKeyPair {
                name: name.to_string(),
                region: region.to_string(),
            }),
            Err(e) if e.code() == Some("InvalidKeyPair.NotFound") => Err(Error::NoKeyPair {
                name: name.to_string(),
                region: region.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// What the server printed to its console, as far as EC2 shows it
    /// (minutes behind, and empty before the first boot is through).
    pub async fn console_output(&self, id: &str) -> Result<String, Error> {
        use base64::Engine;
        let out = self
            .client
            .get_console_output()
            .instance_id(id)
            .send()
            .await
            .map_err(Call::on("read the console of", id))?;
        let text = out
            .output()
            .and_then(|o| base64::engine::general_purpose::STANDARD.decode(o).ok())
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// The architectures an instance type runs ("x86_64", "arm64").
    pub async fn architectures(&self, instance_type: &str) -> Result<Vec<String>, Error> {
        let out = self
            .client
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await
            .map_err(Call::on("describe instance type", instance_type))?;
        Ok(out
            .instance_types()
            .iter()
            .filter_map(|t| t.processor_info())
            .flat_map(|p| p.supported_architectures())
            .map(|a| a.as_str().to_string())
            .collect())
    }

    /// Resolves the stack's image choice: its description (what a change of
    /// replaces the server) and the image a new server would start from.
    pub async fn choose_image(
        &self,
        choice: &ImageChoice,
        instance_type: &str,
        region: &str,
    ) -> Result<(String, Option<Image>), Error> {
        let (release, wanted_arch) = match choice {
            ImageChoice::Ami(id) => {
                let out = self
                    .client
                    .describe_images()
                    .image_ids(id)
                    .send()
                    .await
                    .map_err(Call::on("describe image", id))?;
                let image = out.images().first().map(|i| Image {
                    id: id.clone(),
                    name: i.name().unwrap_or_default().to_string(),
                });
                return Ok((format!("ami {id}"), image));
            }
            ImageChoice::Nixos {
                release,
                architecture,
            } => (release.clone(), architecture.clone()),
        };
        let supported = self.architectures(instance_type).await?;
        let architecture = match wanted_arch {
            Some(a) if supported.contains(&a) => a,
            Some(a) => {
                return Err(Error::ArchitectureMismatch {
                    instance_type: instance_type.to_string(),
                    supported: supported.join(", "),
                    wanted: a,
                });
            }
            None => supported
                .iter()
                .find(|a| *a == "x86_64" || *a == "arm64")
                .cloned()
                .unwrap_or_else(|| "x86_64".to_string()),
        };
        let release_pattern = release.as_deref().unwrap_or("*");
        let out = self
            .client
            .describe_images()
            .owners(NIXOS_OWNER)
            .filters(
                Filter::builder()
                    .name("name")
                    .values(format!(
                        "nixos/{release_pattern}.*-{}",
                        nixos_system(&architecture)
                    ))
                    .build(),
            )
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(Call::on("look up NixOS images in", region))?;
        // ISO 8601 timestamps sort as strings.
        let newest = out
            .images()
            .iter()
            .filter(|i| i.owner_id() == Some(NIXOS_OWNER))
            .filter(|i| i.state().map(|s| s.as_str()) == Some("available"))
            .max_by_key(|i| i.creation_date().unwrap_or_default().to_string());
        let choice = format!(
            "nixos {} {architecture}",
            release.as_deref().unwrap_or("newest")
        );
        let image = newest.map(|i| Image {
            id: i.image_id().unwrap_or_default().to_string(),
            name: i.name().unwrap_or_default().to_string(),
        });
        if image.is_none() {
            tracing::info!(region, choice, "no NixOS image found");
        }
        Ok((choice, image))
    }

    /// The error for a server that must be created but has no image.
    pub fn no_image(choice: &str, region: &str) -> Error {
        let mut words = choice.split(' ').skip(1);
        Error::NoImage {
            region: region.to_string(),
            release: words.next().unwrap_or("newest").to_string(),
            architecture: words.next().unwrap_or("x86_64").to_string(),
        }
    }

    async fn stack_instances(&self, states: &[&str]) -> Result<Vec<Instance>, Error> {
        let reservations = self
            .client
            .describe_instances()
            .filters(self.stack_filter())
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(Call::on("describe", "instances"))?;
        Ok(reservations
            .into_iter()
            .flat_map(|r| r.instances.unwrap_or_default())
            .collect())
    }

    /// The name of the image a server runs, for the plan (none once NixOS
    /// has deleted the image).
    async fn image_name(&self, image: Option<&str>) -> Result<Value, Error> {
        let Some(image) = image else {
            return Ok(Value::None);
        };
        let out = self.client.describe_images().image_ids(image).send().await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.code() == Some("InvalidAMIID.NotFound") => return Ok(Value::None),
            Err(e) => return Err(Call::on("describe image", image)(e).into()),
        };
        Ok(out
            .images()
            .first()
            .and_then(|i| i.name())
            .map(|name| Value::Text(name.to_string()))
            .unwrap_or(Value::None))
    }

    pub(super) async fn observe_instances(&self) -> Result<Vec<Observed>, Error> {
        let mut instances = self
            .stack_instances(&["pending", "running", "stopping", "stopped"])
            .await?;
        let adopted = self.overlay.ids("i-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_instances()
                .set_instance_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "instances to adopt"))?;
            let found: Vec<Instance> = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .cloned()
                .collect();
            merge(&mut instances, &found, |i| i.instance_id());
        }
        let mut observed = Vec::new();
        for i in instances {
            let id = i.instance_id().unwrap_or_default().to_string();
            let tags = self.tags_of(&id, i.tags());
            let root = root_volume(&i);
            let (size, encrypted, volume_type) = match root {
                Some(volume) => self.volume(volume).await?,
                None => (Value::None, Value::None, Value::None),
            };
            let groups = i
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|g| Item::Group(Ref::Id(g.to_string())))
                .collect();
            let http_tokens = i
                .metadata_options()
                .and_then(|m| m.http_tokens())
                .map(|t| Value::Text(t.as_str().to_string()))
                .unwrap_or(Value::None);
            observed.push(Observed {
                address: self.address(Kind::Instance, &id, &tags),
                attrs: BTreeMap::from([
                    (
                        "image",
                        tags.get(IMAGE_TAG)
                            .map(|t| Value::Text(t.clone()))
                            .unwrap_or(Value::None),
                    ),
                    // Shown beside a replacement's new image; never compared.
                    (
                        "image_id",
                        i.image_id()
                            .map(|t| Value::Text(t.to_string()))
                            .unwrap_or(Value::None),
                    ),
                    ("image_name", self.image_name(i.image_id()).await?),
                    (
                        "instance_profile",
                        i.iam_instance_profile()
                            .and_then(|p| p.arn())
                            .and_then(|arn| arn.rsplit('/').next())
                            .map(|name| Value::Ref(Ref::Id(name.to_string())))
                            .unwrap_or(Value::None),
                    ),
                    (
                        "instance_type",
                        Value::Text(
                            i.instance_type()
                                .map(|t| t.as_str().to_string())
                                .unwrap_or_default(),
                        ),
                    ),
                    (
                        "key_name",
                        i.key_name()
                            .map(|k| Value::Text(k.to_string()))
                            .unwrap_or(Value::None),
                    ),
                    (
                        "subnet",
                        i.subnet_id()
                            .map(|s| Value::Ref(Ref::Id(s.to_string())))
                            .unwrap_or(Value::None),
                    ),
                    ("security_groups", Value::Set(groups)),
                    ("root_volume_size", size),
                    ("root_volume_encrypted", encrypted),
                    ("root_volume_type", volume_type),
                    ("http_tokens", http_tokens),
                    (
                        "state",
                        // On its way counts as there.
                        Value::Text(
                            match i.state().and_then(|s| s.name()) {
                                Some(InstanceStateName::Stopping | InstanceStateName::Stopped) => {
                                    "stopped"
                                }
                                _ => "running",
                            }
                            .to_string(),
                        ),
                    ),
                ]),
                id,
                tags,
            });
        }
        Ok(observed)
    }

    /// A volume's size, encryption and type.
    pub(super) async fn volume(&self, volume: &str) -> Result<(Value, Value, Value), Error> {
        let out = self
            .client
            .describe_volumes()
            .volume_ids(volume)
            .send()
            .await
            .map_err(Call::on("describe volume", volume))?;
        let v = out.volumes().first();
        Ok((
            v.and_then(|v| v.size())
                .map(|s| Value::Int(s.into()))
                .unwrap_or(Value::None),
            v.and_then(|v| v.encrypted())
                .map(Value::Bool)
                .unwrap_or(Value::None),
            v.and_then(|v| v.volume_type())
                .map(|t| Value::Text(t.as_str().to_string()))
                .unwrap_or(Value::None),
        ))
    }

    /// The public DNS name of the stack's running server.
    /// The running server's public DNS name and IP address.
    pub async fn server_address(&self) -> Result<Option<ServerAddress>, Error> {
        Ok(self
            .stack_instances(&["running"])
            .await?
            .iter()
            .find_map(|i| {
                let dns = i.public_dns_name().filter(|d| !d.is_empty())?;
                Some(ServerAddress {
                    id: i.instance_id()?.to_string(),
                    dns: dns.to_string(),
                    ip: i.public_ip_address().map(str::to_string),
                    system: i
                        .architecture()
                        .map(|a| nixos_system(a.as_str()).to_string()),
                })
            }))
    }

    pub(super) async fn create_instance(
        &self,
        change: &Change,
        attrs: &Attrs,
    ) -> Result<String, super::super::Error> {
        let (address, tags) = (&change.address, &change.tags);
        let target = address.to_string();
        let instance_type = required(attrs.text("instance_type"), change, "instance_type")?;
        let key_name = required(attrs.text("key_name"), change, "key_name")?;
        let volume_size = required(attrs.int("root_volume_size"), change, "root_volume_size")?;
        let image = attrs
            .text("image_id")
            .ok_or_else(|| incomplete("create", &target, "image_id"))?;
        let choice = attrs.text("image").unwrap_or_default();
        let subnet = attrs
            .id("subnet")
            .ok_or_else(|| incomplete("create", &target, "subnet"))?;
        let groups = attrs.ids("security_groups");
        let earlier: Vec<String> = self
            .stack_instances(&[
                "pending",
                "running",
                "shutting-down",
                "terminated",
                "stopping",
                "stopped",
            ])
            .await?
            .iter()
            .filter(|i| tag_map(i.tags()).get("Name") == tags.get("Name"))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        let day: String = aws_sdk_ec2::primitives::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
            .unwrap_or_default()
            .chars()
            .take(10)
            .collect();
        let token = client_token(&self.prefix, &address.role, choice, &earlier, &day);
        let mut instance_tags = tags.clone();
        instance_tags.insert(IMAGE_TAG.to_string(), choice.to_string());
        let profile = attrs.id("instance_profile").map(|name| {
            IamInstanceProfileSpecification::builder()
                .name(name)
                .build()
        });
        let launch = self
            .client
            .run_instances()
            .set_iam_instance_profile(profile)
            .image_id(image)
            .instance_type(InstanceType::from(instance_type))
            .key_name(key_name)
            .subnet_id(subnet)
            .set_security_group_ids(Some(groups))
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(ROOT_DEVICE)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(volume_size as i32)
                            .volume_type(VolumeType::Gp3)
                            .encrypted(attrs.bool("root_volume_encrypted").unwrap_or(true))
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .tag_specifications(tag_spec(ResourceType::Instance, &instance_tags))
            .tag_specifications(tag_spec(ResourceType::Volume, tags))
            .client_token(token)
            .min_count(1)
            .max_count(1);
        let out = retry_if(
            self.budgets.visibility,
            |e: &SdkError<_, _>| profile_not_ready(e.code(), e.message()),
            || launch.clone().send(),
        )
        .await
        .map_err(Call::on("launch", &target))
        .map_err(Error::from)?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| incomplete("launch", &target, "InstanceId"))?
            .to_string();
        self.wait_instance(&id, InstanceStateName::Running).await?;
        Ok(id)
    }

    /// Polls until the instance is in `state` (and, when running, has its
    /// public DNS name).
    /// Starts a stopped server and waits until it runs.
    async fn start(&self, id: &str) -> Result<(), Error> {
        self.client
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(Call::on("start", id))?;
        self.wait_instance(id, InstanceStateName::Running).await
    }

    /// Whether the server is running or on its way there.
    async fn is_running(&self, id: &str) -> Result<bool, Error> {
        let state = self
            .instance(id)
            .await?
            .and_then(|i| i.state().and_then(|s| s.name()).cloned());
        Ok(matches!(
            state,
            Some(InstanceStateName::Running | InstanceStateName::Pending)
        ))
    }

    /// The instance `id`; none when it is not visible (just launched) or
    /// long gone.
    async fn instance(&self, id: &str) -> Result<Option<aws_sdk_ec2::types::Instance>, Error> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| Call::on("describe", id)(e).into());
        match out {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .next()
                .cloned()),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn wait_instance(&self, id: &str, state: InstanceStateName) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let instance = self.instance(id).await?;
            let current = instance
                .as_ref()
                .and_then(|i| i.state())
                .and_then(|s| s.name())
                .cloned();
            let done = match (&current, &state) {
                (Some(InstanceStateName::Running), InstanceStateName::Running) => instance
                    .as_ref()
                    .and_then(|i| i.public_dns_name())
                    .is_some_and(|d| !d.is_empty()),
                (None, InstanceStateName::Terminated) => true,
                // A reused launch token answers with an old server: say so now.
                (
                    Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown),
                    InstanceStateName::Running,
                ) => {
                    return Err(Error::Terminated { id: id.to_string() });
                }
                (Some(c), s) => c == s,
                (None, _) => false,
            };
            if done {
                return Ok(());
            }
            if started.elapsed() > INSTANCE_WAIT {
                return Err(Error::Timeout {
                    what: format!("instance {id} to be {}", state.as_str()),
                    minutes: INSTANCE_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(instance = id, state = ?current, wanted = state.as_str(), "waiting for instance");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    pub(super) async fn update_instance(
        &self,
        id: &str,
        change: &AttrChange,
        all: &[AttrChange],
    ) -> Result<bool, Error> {
        // EC2 takes one modification of a volume per six hours: a new size
        // and type go in one call.
        let other = |name: &str| all.iter().find(|c| c.name == name).map(|c| &c.after);
        match (change.name, &change.after) {
            ("instance_type", Value::Text(t)) => {
                // A type change needs the server stopped; it starts again after.
                self.client
                    .stop_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(Call::on("stop", id))?;
                self.wait_instance(id, InstanceStateName::Stopped).await?;
                self.client
                    .modify_instance_attribute()
                    .instance_id(id)
                    .instance_type(AttributeValue::builder().value(t).build())
                    .send()
                    .await
                    .map_err(Call::on("change type of", id))?;
                self.start(id).await?;
            }
            ("state", Value::Text(state)) if state == "running" => {
                // Stopped by an interrupted type change (or by hand): start
                // it, unless the type change in this same update already did.
                if self.is_running(id).await? {
                    self.wait_instance(id, InstanceStateName::Running).await?;
                } else {
                    self.wait_instance(id, InstanceStateName::Stopped).await?;
                    self.start(id).await?;
                }
            }
            ("security_groups", Value::Set(groups)) => {
                let groups: Vec<String> = groups
                    .iter()
                    .filter_map(Item::id)
                    .map(str::to_string)
                    .collect();
                self.client
                    .modify_instance_attribute()
                    .instance_id(id)
                    .set_groups(Some(groups))
                    .send()
                    .await
                    .map_err(Call::on("set security groups of", id))?;
            }
            ("root_volume_type", Value::Text(_)) if other("root_volume_size").is_some() => {}
            ("root_volume_size" | "root_volume_type", _) => {
                let size = match (change.name, &change.after) {
                    ("root_volume_size", Value::Int(size)) => Some(*size as i32),
                    _ => None,
                };
                let volume_type = match (change.name, &change.after, other("root_volume_type")) {
                    ("root_volume_type", Value::Text(t), _) | (_, _, Some(Value::Text(t))) => {
                        Some(VolumeType::from(t.as_str()))
                    }
                    _ => None,
                };
                let out = self
                    .client
                    .describe_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(Call::on("describe", id))?;
                let volume = out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .flat_map(|i| i.block_device_mappings())
                    .find(|m| m.device_name() == Some(ROOT_DEVICE))
                    .and_then(|m| m.ebs())
                    .and_then(|e| e.volume_id())
                    .ok_or_else(|| incomplete("modify root volume of", id, "root volume"))?
                    .to_string();
                self.client
                    .modify_volume()
                    .volume_id(&volume)
                    .set_size(size)
                    .set_volume_type(volume_type)
                    .send()
                    .await
                    .map_err(Call::on("modify volume", &volume))?;
            }
            ("instance_profile", Value::Ref(Ref::Id(profile))) => {
                let spec = IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build();
                let associations = self
                    .client
                    .describe_iam_instance_profile_associations()
                    .filters(Filter::builder().name("instance-id").values(id).build())
                    .send()
                    .await
                    .map_err(Call::on("describe instance profile of", id))?;
                let current = associations
                    .iam_instance_profile_associations()
                    .iter()
                    .filter(|a| {
                        a.state().is_some_and(|s| {
                            s.as_str() == "associated" || s.as_str() == "associating"
                        })
                    })
                    .find_map(|a| a.association_id());
                match current {
                    Some(association) => self
                        .client
                        .replace_iam_instance_profile_association()
                        .association_id(association)
                        .iam_instance_profile(spec)
                        .send()
                        .await
                        .map(drop)
                        .map_err(Call::on("replace instance profile of", id))?,
                    None => retry_if(
                        self.budgets.visibility,
                        |e: &SdkError<_, _>| profile_not_ready(e.code(), e.message()),
                        || {
                            self.client
                                .associate_iam_instance_profile()
                                .instance_id(id)
                                .iam_instance_profile(spec.clone())
                                .send()
                        },
                    )
                    .await
                    .map(drop)
                    .map_err(Call::on("set instance profile of", id))?,
                }
            }
            ("http_tokens", Value::Text(t)) => {
                self.client
                    .modify_instance_metadata_options()
                    .instance_id(id)
                    .http_tokens(HttpTokensState::from(t.as_str()))
                    .send()
                    .await
                    .map_err(Call::on("require IMDSv2 on", id))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) async fn delete_instance(
        &self,
        id: &str,
        keep_disk: bool,
    ) -> Result<Option<String>, Error> {
        let snapshot = if keep_disk {
            self.snapshot_disk(id).await?
        } else {
            None
        };
        let result = self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| Call::on("terminate", id)(e).into());
        match result {
            Err(e) if is_gone(&e) => return Ok(snapshot),
            other => other.map(drop)?,
        }
        // Its network interface holds the subnet and security group until it is gone.
        self.wait_instance(id, InstanceStateName::Terminated)
            .await?;
        Ok(snapshot.map(|s| format!("snapshot of the server's disk {s}")))
    }

    /// Takes a snapshot of the server's root volume and waits until it is
    /// complete; returns its id (none when the server or its disk is gone).
    /// A rerun after an interruption finds the snapshot it made by the tag
    /// naming the server, instead of taking a second one.
    async fn snapshot_disk(&self, id: &str) -> Result<Option<String>, Error> {
        let snapshot = match self.disk_snapshot_of(id).await? {
            Some(existing) => existing,
            None => {
                let Some(volume) = self.root_volume(id).await? else {
                    return Ok(None);
                };
                let name = format!(
                    "{}-server-final-{}",
                    self.prefix,
                    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
                        .fmt(aws_smithy_types::date_time::Format::DateTime)
                        .unwrap_or_default()
                        .replace([':', '-'], "")
                );
                let tags = BTreeMap::from([
                    ("Name".to_string(), name),
                    (SNAPSHOT_OF.to_string(), id.to_string()),
                    (SNAPSHOT_STACK.to_string(), self.prefix.clone()),
                ]);
                // No idempotency token: sent once, and after a fault looked
                // for by its tag before it is sent again.
                create_once_found_by(
                    &format!("snapshot of the disk of {id}"),
                    super::attempts(&self.client),
                    || {
                        self.client
                            .create_snapshot()
                            .volume_id(&volume)
                            .description(format!(
                                "ihp-infra: the disk of {}'s server {id}, kept when it was deleted",
                                self.prefix
                            ))
                            .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
                            .customize()
                            .config_override(no_retries())
                            .send()
                    },
                    "SnapshotId",
                    |out| out.snapshot_id(),
                    || self.disk_snapshot_of(id),
                )
                .await?
            }
        };
        let started = Instant::now();
        loop {
            let out = self
                .client
                .describe_snapshots()
                .snapshot_ids(&snapshot)
                .send()
                .await
                .map_err(Call::on("describe snapshot", &snapshot))?;
            let state = out.snapshots().first().and_then(|s| s.state()).cloned();
            match state {
                Some(SnapshotState::Completed) => return Ok(Some(snapshot)),
                Some(SnapshotState::Error) => {
                    return Err(Error::SnapshotFailed {
                        snapshot,
                        instance: id.to_string(),
                    });
                }
                _ => {}
            }
            if started.elapsed() > SNAPSHOT_WAIT {
                return Err(Error::Timeout {
                    what: format!("snapshot {snapshot} of the disk of {id}"),
                    minutes: SNAPSHOT_WAIT.as_secs() / 60,
                });
            }
            tracing::info!(instance = id, snapshot, state = ?state, "waiting for the disk snapshot");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }

    /// The disk snapshot kept of server `id`, found by its tag.
    async fn disk_snapshot_of(&self, id: &str) -> Result<Option<String>, Error> {
        let found = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name(format!("tag:{SNAPSHOT_OF}"))
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .map_err(Call::on("look for the disk snapshot of", id))?;
        Ok(found
            .snapshots()
            .iter()
            .find_map(|s| s.snapshot_id())
            .map(str::to_string))
    }

    /// The id of the server's root volume, if the server still has one.
    async fn root_volume(&self, id: &str) -> Result<Option<String>, Error> {
        let out = match self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidInstanceID")) => {
                return Ok(None);
            }
            other => other.map_err(Call::on("describe", id))?,
        };
        let Some(instance) = out.reservations().iter().flat_map(|r| r.instances()).next() else {
            return Ok(None);
        };
        let root = instance.root_device_name();
        Ok(instance
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == root)
            .and_then(|m| m.ebs())
            .and_then(|e| e.volume_id())
            .map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_launch_reuses_its_token() {
        let a = client_token("demo", "app", "nixos newest x86_64", &[], "2026-11-25");
        assert_eq!(
            a,
            client_token("demo", "app", "nixos newest x86_64", &[], "2026-11-25")
        );
        assert!(a.len() <= 64, "ClientToken is at most 64 ASCII characters");
    }

    #[test]
    fn replacement_or_terminated_server_gets_a_new_token() {
        // moto ignores ClientToken, so this is where the rule is checked.
        let first = client_token("demo", "app", "nixos newest x86_64", &[], "2026-11-25");
        let after_termination = client_token(
            "demo",
            "app",
            "nixos newest x86_64",
            &["i-0abc".into()],
            "2026-11-25",
        );
        assert_ne!(first, after_termination);
        let other_image = client_token("demo", "app", "nixos 26.05 arm64", &[], "2026-11-25");
        assert_ne!(first, other_image);
        assert_ne!(
            first,
            client_token("other", "app", "nixos newest x86_64", &[], "2026-11-25")
        );
        // Order of earlier servers does not matter.
        assert_eq!(
            client_token(
                "demo",
                "app",
                "c",
                &["i-1".into(), "i-2".into()],
                "2026-11-25"
            ),
            client_token(
                "demo",
                "app",
                "c",
                &["i-2".into(), "i-1".into()],
                "2026-11-25"
            )
        );
    }

    #[test]
    fn a_new_day_gets_a_new_token() {
        assert_ne!(
            client_token("demo", "app", "c", &[], "2026-11-25"),
            client_token("demo", "app", "c", &[], "2026-11-26")
        );
    }

    #[test]
    fn systems() {
        assert_eq!(nixos_system("arm64"), "aarch64-linux");
        assert_eq!(nixos_system("x86_64"), "x86_64-linux");
    }
}
