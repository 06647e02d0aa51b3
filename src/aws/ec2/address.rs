//! The server's Elastic IP: a public address that stays when the server is
//! stopped, started or replaced (it moves to the new one), so the ssh entry
//! and DNS records keep working. Found by the stack tag, set in the
//! allocation itself.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Address as ElasticAddress, DomainType, ResourceType};

use super::{
    Call, Error, create_once_found_by, is_gone, no_retries, stack_filter, tag_map, tag_spec,
};
use crate::aws::overlay::merge;
use crate::aws::service::{Created, Service, Wanted, required};
use crate::model::{Attrs, Kind, Observed, Ref, Value};
use crate::plan::{AttrChange, Change};
use async_trait::async_trait;

/// The EC2 API's Elastic IPs, as a service of their own: the kind needs
/// nothing of the network's code but the shared helpers.
pub struct Addresses {
    client: Client,
    prefix: String,
    overlay: std::sync::Arc<crate::aws::overlay::Overlay>,
}

impl Addresses {
    pub fn new(
        client: Client,
        prefix: &str,
        overlay: std::sync::Arc<crate::aws::overlay::Overlay>,
    ) -> Self {
        Addresses {
            client,
            prefix: prefix.to_string(),
            overlay,
        }
    }

    async fn live(&self) -> Result<Vec<ElasticAddress>, Error> {
        let mut live = self
            .client
            .describe_addresses()
            .filters(stack_filter(&self.prefix))
            .send()
            .await
            .map_err(Call::on("describe", "elastic IPs"))?
            .addresses()
            .to_vec();
        let adopted = self.overlay.ids("eipalloc-");
        if !adopted.is_empty() {
            let out = self
                .client
                .describe_addresses()
                .set_allocation_ids(Some(adopted))
                .send()
                .await
                .map_err(Call::on("describe", "elastic IPs to adopt"))?;
            merge(&mut live, out.addresses(), |v| v.allocation_id());
        }
        Ok(live)
    }

    /// The public address of the stack's Elastic IP, once it exists.
    pub async fn public_ip(&self) -> Result<Option<String>, Error> {
        Ok(self
            .live()
            .await?
            .iter()
            .find_map(|a| a.public_ip().map(str::to_string)))
    }

    /// The stack's Elastic IP as EC2 has it (id, address, tags), if any.
    pub async fn stack_address(&self) -> Result<Option<ElasticAddress>, Error> {
        Ok(self.live().await?.into_iter().next())
    }

    /// The public address of allocation `id` (an Elastic IP made in this run).
    pub async fn public_ip_of(&self, id: &str) -> Result<Option<String>, Error> {
        let out = self
            .client
            .describe_addresses()
            .allocation_ids(id)
            .send()
            .await
            .map_err(Call::on("describe", id))?;
        Ok(out
            .addresses()
            .iter()
            .find_map(|a| a.public_ip().map(str::to_string)))
    }

    /// Sets one tag on allocation `id`, beside its others.
    pub async fn set_tag(&self, id: &str, key: &str, value: &str) -> Result<(), Error> {
        self.client
            .create_tags()
            .resources(id)
            .set_tags(Some(super::aws_tags(&BTreeMap::from([(
                key.to_string(),
                value.to_string(),
            )]))))
            .send()
            .await
            .map_err(Call::on("tag", id))?;
        Ok(())
    }

    async fn observe(&self) -> Result<Vec<Observed>, Error> {
        Ok(self
            .live()
            .await?
            .into_iter()
            .filter_map(|a| {
                let id = a.allocation_id()?.to_string();
                let tags = self.overlay.tags(&id, tag_map(a.tags()));
                Some(Observed {
                    address: super::address_of(&self.prefix, Kind::ElasticIp, &id, &tags),
                    attrs: BTreeMap::from([
                        (
                            "domain",
                            a.domain()
                                .map(|d| Value::Text(d.as_str().to_string()))
                                .unwrap_or(Value::None),
                        ),
                        (
                            "instance",
                            a.instance_id()
                                .map(|i| Value::Ref(Ref::Id(i.to_string())))
                                .unwrap_or(Value::None),
                        ),
                    ]),
                    id,
                    tags,
                })
            })
            .collect())
    }

    /// The allocation at `address`, found by its tags (after a lost answer).
    async fn find(&self, change: &Change) -> Result<Option<String>, Error> {
        Ok(self
            .observe()
            .await?
            .into_iter()
            .find(|o| o.address == change.address)
            .map(|o| o.id))
    }

    /// AllocateAddress takes no idempotency token: sent once, and after a
    /// fault looked for by its tags before it is sent again.
    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<String, crate::aws::Error> {
        let domain = required(attrs.text("domain"), change, "domain")?;
        let target = change.address.to_string();
        let id = create_once_found_by(
            &target,
            super::attempts(&self.client),
            || {
                self.client
                    .allocate_address()
                    .domain(DomainType::from(domain))
                    .tag_specifications(tag_spec(ResourceType::ElasticIp, &change.tags))
                    .customize()
                    .config_override(no_retries())
                    .send()
            },
            "AllocationId",
            |out| out.allocation_id(),
            || self.find(change),
        )
        .await?;
        if let Some(instance) = attrs.id("instance") {
            self.associate(&id, instance).await?;
        }
        Ok(id)
    }

    /// Points the address at `instance`, taking it from any other.
    async fn associate(&self, allocation: &str, instance: &str) -> Result<(), Error> {
        self.client
            .associate_address()
            .allocation_id(allocation)
            .instance_id(instance)
            .allow_reassociation(true)
            .send()
            .await
            .map_err(Call::on("associate", allocation))?;
        Ok(())
    }

    async fn update(&self, allocation: &str, changes: &[AttrChange]) -> Result<(), Error> {
        for c in changes {
            match (c.name, &c.after) {
                ("instance", Value::Ref(Ref::Id(instance))) => {
                    self.associate(allocation, instance).await?
                }
                ("instance", _) => self.disassociate(allocation).await?,
                ("tags", _) => {
                    self.client
                        .create_tags()
                        .resources(allocation)
                        .set_tags(Some(super::aws_tags(&c.added_tags())))
                        .send()
                        .await
                        .map_err(Call::on("tag", allocation))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn disassociate(&self, allocation: &str) -> Result<(), Error> {
        let association = self
            .live()
            .await?
            .into_iter()
            .find(|a| a.allocation_id() == Some(allocation))
            .and_then(|a| a.association_id().map(str::to_string));
        let Some(association) = association else {
            return Ok(());
        };
        match self
            .client
            .disassociate_address()
            .association_id(&association)
            .send()
            .await
            .map_err(Call::on("disassociate", allocation))
        {
            Err(e) if e.code().is_some_and(|c| c.ends_with(".NotFound")) => Ok(()),
            other => Ok(other.map(drop)?),
        }
    }

    /// Releases the address; a server it points at keeps running without it.
    async fn delete(&self, allocation: &str) -> Result<(), Error> {
        self.disassociate(allocation).await?;
        let result = self
            .client
            .release_address()
            .allocation_id(allocation)
            .send()
            .await
            .map_err(|e| Error::from(Call::on("release", allocation)(e)));
        match result {
            Err(e) if is_gone(&e) => Ok(()),
            other => other.map(drop),
        }
    }
}

#[async_trait]
impl Service for Addresses {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ElasticIp]
    }

    async fn observe(&self, _wanted: &Wanted<'_>) -> Result<Vec<Observed>, crate::aws::Error> {
        Ok(self.observe().await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, crate::aws::Error> {
        Ok(Created::id(self.create(change, attrs).await?))
    }

    async fn update(
        &self,
        _change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), crate::aws::Error> {
        Ok(self.update(id, attrs).await?)
    }

    async fn delete(
        &self,
        _change: &Change,
        id: &str,
    ) -> Result<Option<String>, crate::aws::Error> {
        self.delete(id).await?;
        Ok(None)
    }
}
