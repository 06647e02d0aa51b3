//! Route53: the A records of the stack's domain, in a hosted zone the user
//! owns (ihp-infra never creates or deletes a zone: it needs the
//! registrar's delegation).
//!
//! The records are the domain's A records and, with mail from a domain in
//! the zone, Easy DKIM's three CNAME records (named by tokens SES gives the
//! identity when it is made: read from SES when they are written).
//!
//! Record sets carry no tags. A record is the stack's only while its
//! ownership record stands beside it: a TXT record at `_ihp-infra.<name>`
//! saying `ihp-infra:stack=<prefix>;type=A` (and `;role=dkim-1` where the
//! record's role isn't its name), written and deleted in the
//! same atomic change batch as the record itself (a delete names it
//! exactly as this stack writes it, so Route53 refuses the batch if it
//! changed hands since the plan; a create uses CREATE, which fails on a
//! record someone made since). A record at
//! one of the stack's names without it was made by someone else: it is
//! never changed, and a plan that would create one there stops naming it.
//! Deleting the stack's records finds them by their ownership records, so a
//! name dropped from the stack file goes too. The zone they are in is
//! remembered on the stack's Elastic IP (tag `ihp-infra:dns-zone`): records
//! in a zone the stack file no longer names (or after `domain` is gone) are
//! still found, and deleted before the address is released.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change as RecordChange, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use tokio::sync::Mutex;

use super::service::{CallError, Created, Service, Wanted, required};
use crate::desired;
use crate::model::{Attrs, Kind, Observed, Ref, Value};
use crate::plan::{Action, Plan};
use crate::plan::{AttrChange, Change};

/// A failed Route53 call.
pub type Call = CallError<aws_sdk_route53::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    /// The Elastic IP's address or tag (read and set through its service).
    #[error(transparent)]
    Ec2(#[from] Box<super::ec2::Error>),
    #[error(
        "no public hosted zone {zone} in this account: create it in Route53 and delegate \
         the domain to its name servers at your registrar (ihp-infra never creates or deletes \
         a zone), or remove dns_zone from the stack file to create the records at your registrar"
    )]
    NoZone { zone: String },
    #[error(
        "two public hosted zones are named {zone} ({first} and {second}): ihp-infra can't tell \
         which one the registrar delegates to; delete the unused one"
    )]
    TwoZones {
        zone: String,
        first: String,
        second: String,
    },
    #[error(
        "the {kind} record {name} in zone {zone} was not written by stack {prefix}{}: \
         ihp-infra never changes records it didn't write; delete it in Route53 to let \
         ihp-infra manage the name, or take the name out of domain/domain_aliases",
        owner.as_ref().map(|o| format!(" (stack {o} wrote it)")).unwrap_or_default()
    )]
    NotOurs {
        kind: String,
        name: String,
        zone: String,
        prefix: String,
        owner: Option<String>,
    },
    #[error("the Elastic IP {allocation} has no public address")]
    NoAddress { allocation: String },
    #[error("internal error: a record change is incomplete: {0}")]
    Build(#[from] aws_sdk_route53::error::BuildError),
    #[error(transparent)]
    Ses(#[from] Box<super::ses::Error>),
    #[error("SES gave identity {domain} no DKIM token {n}")]
    NoDkimToken { domain: String, n: i64 },
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            Error::Ec2(e) => e.code(),
            Error::Ses(e) => e.code(),
            _ => None,
        }
    }
}

/// The name of a record's ownership record.
pub fn owner_name(name: &str) -> String {
    format!("_ihp-infra.{name}")
}

/// The ownership record's value (a quoted TXT string): the stack, the
/// record's type, and its role where that isn't its name.
pub fn owner_value(prefix: &str, kind: &str, role: Option<&str>) -> String {
    match role {
        Some(role) => format!("\"ihp-infra:stack={prefix};type={kind};role={role}\""),
        None => format!("\"ihp-infra:stack={prefix};type={kind}\""),
    }
}

/// Who wrote a record, as its ownership record says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    stack: String,
    kind: String,
    role: Option<String>,
}

fn parse_owner(value: &str) -> Option<Owner> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let rest = inner.strip_prefix("ihp-infra:stack=")?;
    let mut parts = rest.split(';');
    let stack = parts.next()?.to_string();
    let kind = parts.next()?.strip_prefix("type=")?.to_string();
    let role = match parts.next() {
        Some(r) => Some(r.strip_prefix("role=")?.to_string()),
        None => None,
    };
    Some(Owner { stack, kind, role })
}

/// A record name as ihp-infra writes it: Route53 answers with the final dot.
fn plain(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

pub struct Route53 {
    client: Client,
    /// The stack's Elastic IP: what A records hold, where the zone is
    /// remembered.
    addresses: std::sync::Arc<super::ec2::address::Addresses>,
    /// Where the DKIM records' names come from.
    ses: std::sync::Arc<super::ses::Ses>,
    prefix: String,
    /// The stack's `dns_zone`, if it names one.
    zone: Option<String>,
    /// Zone ids by name, looked up once per run.
    zone_ids: Mutex<HashMap<String, String>>,
}

/// The stack's Elastic IP, as the records see it.
struct StackAddress {
    allocation: String,
    ip: Option<String>,
    /// The zone its tag remembers.
    zone: Option<String>,
}

/// The tag on the stack's Elastic IP that names the zone its records are in.
pub const ZONE_TAG: &str = "ihp-infra:dns-zone";

/// One live record set, as much of it as ihp-infra reads.
#[derive(Clone, Debug)]
struct Record {
    name: String,
    kind: String,
    ttl: Option<i64>,
    values: Vec<String>,
    /// An alias, weighted, latency... record: never one ihp-infra writes,
    /// so never the stack's, whatever its ownership record says.
    routed: bool,
}

impl Record {
    fn of(set: &ResourceRecordSet) -> Record {
        Record {
            name: plain(set.name()),
            kind: set.r#type().as_str().to_string(),
            ttl: set.ttl(),
            values: set
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect(),
            routed: set.alias_target().is_some() || set.set_identifier().is_some(),
        }
    }

    fn set(&self) -> Result<ResourceRecordSet, Error> {
        let mut set = ResourceRecordSet::builder()
            .name(&self.name)
            .r#type(RrType::from(self.kind.as_str()))
            .set_ttl(self.ttl);
        for v in &self.values {
            set = set.resource_records(
                ResourceRecord::builder()
                    .value(v)
                    .build()
                    .map_err(Error::from)?,
            );
        }
        set.build().map_err(Error::from)
    }
}

impl Route53 {
    pub fn new(
        client: Client,
        addresses: std::sync::Arc<super::ec2::address::Addresses>,
        ses: std::sync::Arc<super::ses::Ses>,
        prefix: &str,
        zone: Option<String>,
    ) -> Self {
        Route53 {
            client,
            addresses,
            ses,
            prefix: prefix.to_string(),
            zone,
            zone_ids: Mutex::default(),
        }
    }

    /// The id of the public zone named `zone`: exactly one, or an error.
    async fn zone_id(&self, zone: &str) -> Result<String, Error> {
        let mut ids = self.zone_ids.lock().await;
        if let Some(id) = ids.get(zone) {
            return Ok(id.clone());
        }
        let out = self
            .client
            .list_hosted_zones_by_name()
            .dns_name(zone)
            .send()
            .await
            .map_err(Call::on("find hosted zone", zone))?;
        let mut found: Vec<String> = out
            .hosted_zones()
            .iter()
            .filter(|z| plain(z.name()) == zone)
            .filter(|z| !z.config().is_some_and(|c| c.private_zone()))
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
            .collect();
        found.sort();
        let id = match found.as_slice() {
            [] => {
                return Err(Error::NoZone {
                    zone: zone.to_string(),
                });
            }
            [id] => id.clone(),
            [first, second, ..] => {
                return Err(Error::TwoZones {
                    zone: zone.to_string(),
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        };
        ids.insert(zone.to_string(), id.clone());
        Ok(id)
    }

    /// The stack's Elastic IP: its allocation id, its address, and the
    /// zone its tag remembers.
    async fn address_tag(&self) -> Result<Option<StackAddress>, Error> {
        let address = self.addresses.stack_address().await.map_err(Box::new)?;
        Ok(address.and_then(|a| {
            let zone = a
                .tags()
                .iter()
                .find(|t| t.key() == Some(ZONE_TAG))
                .and_then(|t| t.value().map(str::to_string));
            Some(StackAddress {
                allocation: a.allocation_id()?.to_string(),
                ip: a.public_ip().map(str::to_string),
                zone,
            })
        }))
    }

    /// Remembers `zone` on the stack's Elastic IP (see the module's doc).
    async fn remember_zone(&self, zone: &str) -> Result<(), Error> {
        let Some(StackAddress {
            allocation,
            zone: remembered,
            ..
        }) = self.address_tag().await?
        else {
            return Ok(());
        };
        if remembered.as_deref() == Some(zone) {
            return Ok(());
        }
        self.addresses
            .set_tag(&allocation, ZONE_TAG, zone)
            .await
            .map_err(Box::new)?;
        Ok(())
    }

    /// Every record set of the zone, page by page.
    async fn records(&self, zone_id: &str) -> Result<Vec<Record>, Error> {
        let mut all = Vec::new();
        let mut next: Option<(String, RrType, Option<String>)> = None;
        loop {
            let mut list = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone_id);
            if let Some((name, kind, identifier)) = next.take() {
                list = list
                    .start_record_name(name)
                    .start_record_type(kind)
                    .set_start_record_identifier(identifier);
            }
            let out = list
                .send()
                .await
                .map_err(Call::on("list records of hosted zone", zone_id))?;
            all.extend(out.resource_record_sets().iter().map(Record::of));
            match (
                out.is_truncated(),
                out.next_record_name(),
                out.next_record_type(),
            ) {
                (true, Some(name), Some(kind)) => {
                    next = Some((
                        name.to_string(),
                        kind.clone(),
                        out.next_record_identifier().map(str::to_string),
                    ))
                }
                _ => return Ok(all),
            }
        }
    }

    /// The record at `name` of type `kind`, as it is now: one listing
    /// from that name on, not the whole zone.
    async fn one(&self, zone_id: &str, name: &str, kind: &str) -> Result<Option<Record>, Error> {
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .start_record_name(name)
            .start_record_type(RrType::from(kind))
            .max_items(1)
            .send()
            .await
            .map_err(Call::on("read record", name))?;
        Ok(out
            .resource_record_sets()
            .iter()
            .map(Record::of)
            .find(|r| r.name == name && r.kind == kind))
    }

    /// The records (A or CNAME) at `name` that aren't the stack's.
    async fn foreign(&self, zone_id: &str, name: &str) -> Result<Option<Record>, Error> {
        for kind in ["A", "CNAME"] {
            if let Some(r) = self.one(zone_id, name, kind).await? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    async fn observe(&self) -> Result<Vec<Observed>, Error> {
        let address = self.address_tag().await?;
        let remembered = address.as_ref().and_then(|a| a.zone.clone());
        let mut zones: Vec<&str> = self
            .zone
            .iter()
            .chain(remembered.iter())
            .map(String::as_str)
            .collect();
        zones.dedup();
        let mut observed = Vec::new();
        for zone in zones {
            // A zone that isn't there holds nothing of the stack's; a plan
            // that writes to it stops in `check`.
            let zone_id = match self.zone_id(zone).await {
                Err(Error::NoZone { .. }) => continue,
                other => other?,
            };
            observed.extend(self.observe_zone(zone, &zone_id, address.as_ref()).await?);
        }
        Ok(observed)
    }

    /// The stack's records in one zone, by their ownership records.
    /// A record holding the stack's Elastic IP's address is said to hold
    /// that Elastic IP (what the plan compares it with).
    async fn observe_zone(
        &self,
        zone: &str,
        zone_id: &str,
        address: Option<&StackAddress>,
    ) -> Result<Vec<Observed>, Error> {
        let records = self.records(zone_id).await?;
        let owners: BTreeMap<(String, String), Owner> = records
            .iter()
            .filter(|r| r.kind == "TXT")
            .filter_map(|r| {
                let name = r.name.strip_prefix("_ihp-infra.")?;
                r.values.iter().find_map(|v| {
                    let owner = parse_owner(v)?;
                    Some(((name.to_string(), owner.kind.clone()), owner))
                })
            })
            .collect();
        Ok(records
            .iter()
            .filter(|r| (r.kind == "A" || r.kind == "CNAME") && !r.routed)
            .filter_map(|r| {
                let owner = owners
                    .get(&(r.name.clone(), r.kind.clone()))
                    .filter(|o| o.stack == self.prefix)?;
                Some(Observed {
                    address: crate::model::Address::new(
                        Kind::DnsRecord,
                        owner.role.as_deref().unwrap_or(&r.name),
                    ),
                    id: format!("{} {}", r.name, r.kind),
                    tags: BTreeMap::new(),
                    attrs: BTreeMap::from([
                        ("zone", Value::Text(zone.to_string())),
                        ("name", Value::Text(r.name.clone())),
                        ("type", Value::Text(r.kind.clone())),
                        ("ttl", r.ttl.map(Value::Int).unwrap_or(Value::None)),
                        (
                            "address",
                            match address {
                                Some(a)
                                    if r.values.len() == 1 && a.ip.as_ref() == r.values.first() =>
                                {
                                    Value::Ref(Ref::Id(a.allocation.clone()))
                                }
                                // Several values (edited by hand) differ from any one.
                                _ => Value::Text(r.values.join(",")),
                            },
                        ),
                    ]),
                })
            })
            .collect())
    }

    /// The DKIM token `n` (1 to 3) of identity `domain`, from SES.
    async fn dkim_token(&self, domain: &str, n: i64) -> Result<String, Error> {
        let tokens = self.ses.dkim_tokens(domain).await.map_err(Box::new)?;
        usize::try_from(n - 1)
            .ok()
            .and_then(|i| tokens.get(i).cloned())
            .ok_or_else(|| Error::NoDkimToken {
                domain: domain.to_string(),
                n,
            })
    }

    /// A record's name and value from the plan's attributes: given, or
    /// read now from what they wait for (the Elastic IP; the SES identity).
    async fn name_and_value(
        &self,
        change: &Change,
        name: Option<&Value>,
        value: Option<&Value>,
        token: Option<i64>,
    ) -> Result<(String, String), super::Error> {
        if let Some(Value::Ref(Ref::Id(domain))) = name {
            let n = required(token, change, "dkim_token")?;
            let token = self.dkim_token(domain, n).await?;
            return Ok((
                format!("{token}._domainkey.{domain}"),
                format!("{token}.dkim.amazonses.com"),
            ));
        }
        let name = match name {
            Some(Value::Text(n)) => n.clone(),
            _ => return Err(required::<String>(None, change, "name").unwrap_err()),
        };
        let value = required(self.address(value).await?, change, "address")?;
        Ok((name, value))
    }

    /// The address a record should hold: given, or the new Elastic IP's.
    async fn address(&self, value: Option<&Value>) -> Result<Option<String>, Error> {
        match value {
            Some(Value::Text(ip)) => Ok(Some(ip.clone())),
            Some(Value::Ref(Ref::Id(allocation))) => self
                .addresses
                .public_ip_of(allocation)
                .await
                .map_err(Box::new)?
                .map(Some)
                .ok_or_else(|| Error::NoAddress {
                    allocation: allocation.clone(),
                }),
            _ => Ok(None),
        }
    }

    async fn send(&self, zone_id: &str, changes: Vec<(ChangeAction, Record)>) -> Result<(), Error> {
        // The comment stays far below Route53's 256 characters.
        let mut batch = ChangeBatch::builder().comment(format!("ihp-infra stack {}", self.prefix));
        for (action, record) in changes {
            batch = batch.changes(
                RecordChange::builder()
                    .action(action)
                    .resource_record_set(record.set()?)
                    .build()
                    .map_err(Error::from)?,
            );
        }
        let batch = batch.build().map_err(Error::from)?;
        self.client
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(Call::on("change records of hosted zone", zone_id))?;
        Ok(())
    }

    /// The ownership record of the record `name` of type `kind` at `role`.
    fn owner_record(&self, name: &str, kind: &str, role: &str) -> Record {
        Record {
            name: owner_name(name),
            kind: "TXT".into(),
            ttl: Some(desired::DNS_TTL),
            values: vec![owner_value(
                &self.prefix,
                kind,
                (role != name).then_some(role),
            )],
            routed: false,
        }
    }
}

#[async_trait]
impl Service for Route53 {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::DnsRecord]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        // A stack that never had a domain has no Elastic IP tag to read.
        if self.zone.is_none() && wanted.of_kind(Kind::ElasticIp).next().is_none() {
            return Ok(Vec::new());
        }
        Ok(self.observe().await?)
    }

    /// A record the plan creates must have its zone, and its name must be
    /// free: a record someone else wrote there is never taken over.
    async fn check(&self, plan: &Plan) -> Result<(), super::Error> {
        for c in &plan.changes {
            if c.address.kind != Kind::DnsRecord || c.action != Action::Create {
                continue;
            }
            let attrs = c.desired_attrs();
            let zone = required(attrs.text("zone"), c, "zone")?;
            let zone_id = self.zone_id(zone).await?;
            // A DKIM record's name is known once SES gave its token.
            let Some(name) = attrs.text("name") else {
                continue;
            };
            if let Some(r) = self.foreign(&zone_id, name).await? {
                let owner = self
                    .one(&zone_id, &owner_name(name), "TXT")
                    .await?
                    .and_then(|o| o.values.iter().find_map(|v| parse_owner(v)))
                    .map(|o| o.stack);
                return Err(Error::NotOurs {
                    kind: r.kind,
                    name: name.to_string(),
                    zone: zone.to_string(),
                    prefix: self.prefix.clone(),
                    owner,
                }
                .into());
            }
        }
        Ok(())
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        let zone = required(attrs.text("zone"), change, "zone")?;
        let kind = required(attrs.text("type"), change, "type")?;
        let (name, value) = self
            .name_and_value(
                change,
                attrs.0.get("name"),
                attrs.0.get("address"),
                attrs.int("dkim_token"),
            )
            .await?;
        let zone_id = self.zone_id(zone).await?;
        // Remembered before the record exists: a run killed after the
        // batch still finds it in this zone.
        self.remember_zone(zone).await?;
        let owner = self.owner_record(&name, kind, &change.address.role);
        let live_owner = self.one(&zone_id, &owner.name, "TXT").await?;
        if let Some(theirs) = live_owner.as_ref().filter(|o| o.values != owner.values) {
            return Err(Error::NotOurs {
                kind: kind.to_string(),
                name: name.clone(),
                zone: zone.to_string(),
                prefix: self.prefix.clone(),
                owner: theirs
                    .values
                    .iter()
                    .find_map(|v| parse_owner(v))
                    .map(|o| o.stack),
            }
            .into());
        }
        let record = Record {
            name: name.clone(),
            kind: kind.to_string(),
            ttl: Some(attrs.int("ttl").unwrap_or(desired::DNS_TTL)),
            values: vec![value],
            routed: false,
        };
        // One atomic batch: CREATE fails on a record someone made since
        // the plan, and the ownership record comes with it (one of this
        // stack's already there, the record deleted by hand, stays).
        let mut changes = vec![(ChangeAction::Create, record)];
        if live_owner.is_none() {
            changes.push((ChangeAction::Create, owner));
        }
        self.send(&zone_id, changes).await?;
        Ok(Created::id(format!("{name} {kind}")))
    }

    async fn update(
        &self,
        change: &Change,
        _id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), super::Error> {
        let value = |n: &str| {
            attrs
                .iter()
                .find(|a| a.name == n)
                .map(|a| a.after.clone())
                .or_else(|| change.observed.0.get(n).cloned())
        };
        let zone = required(change.observed.text("zone"), change, "zone")?;
        let kind = required(change.observed.text("type"), change, "type")?;
        let (name, address) = self
            .name_and_value(
                change,
                change.observed.0.get("name"),
                value("address").as_ref(),
                None,
            )
            .await?;
        let ttl = match value("ttl") {
            Some(Value::Int(t)) => t,
            _ => desired::DNS_TTL,
        };
        let zone_id = self.zone_id(zone).await?;
        let record = Record {
            name: name.clone(),
            kind: kind.to_string(),
            ttl: Some(ttl),
            values: vec![address],
            routed: false,
        };
        // Observe found the record by its ownership record: this stack's.
        self.send(&zone_id, vec![(ChangeAction::Upsert, record)])
            .await?;
        Ok(())
    }

    async fn delete(&self, change: &Change, _id: &str) -> Result<Option<String>, super::Error> {
        let Some(zone) = change.observed.text("zone").or(self.zone.as_deref()) else {
            return Ok(None);
        };
        let name = change
            .observed
            .text("name")
            .unwrap_or(&change.address.role)
            .to_string();
        let kind = change.observed.text("type").unwrap_or("A").to_string();
        let zone_id = self.zone_id(zone).await?;
        // DELETE must name the record exactly as it is: read it first. The
        // ownership record is named as this stack writes it: a batch
        // against a record that changed hands fails whole.
        let record = self.one(&zone_id, &name, &kind).await?;
        let owner = self.owner_record(&name, &kind, &change.address.role);
        let live_owner = self.one(&zone_id, &owner.name, "TXT").await?;
        let mut changes: Vec<(ChangeAction, Record)> = record
            .into_iter()
            .map(|r| (ChangeAction::Delete, r))
            .collect();
        if live_owner.is_some() {
            changes.push((ChangeAction::Delete, owner));
        }
        if !changes.is_empty() {
            self.send(&zone_id, changes).await?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_records_name_the_stack_and_type() {
        assert_eq!(owner_name("app.example.com"), "_ihp-infra.app.example.com");
        let value = owner_value("demo", "A", None);
        assert_eq!(value, "\"ihp-infra:stack=demo;type=A\"");
        assert_eq!(
            parse_owner(&value),
            Some(Owner {
                stack: "demo".into(),
                kind: "A".into(),
                role: None
            })
        );
        let value = owner_value("demo", "CNAME", Some("dkim-1"));
        assert_eq!(value, "\"ihp-infra:stack=demo;type=CNAME;role=dkim-1\"");
        assert_eq!(parse_owner(&value).unwrap().role.as_deref(), Some("dkim-1"));
        assert_eq!(parse_owner("\"v=spf1 -all\""), None);
        assert_eq!(parse_owner("ihp-infra:stack=demo;type=A"), None, "unquoted");
    }

    #[test]
    fn names_lose_routes_final_dot() {
        assert_eq!(plain("App.Example.com."), "app.example.com");
        assert_eq!(plain("app.example.com"), "app.example.com");
    }
}
