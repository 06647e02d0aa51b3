//! Route53: the A records of the stack's domain, in a hosted zone the user
//! owns (ihp-infra never creates or deletes a zone: it needs the
//! registrar's delegation).
//!
//! Record sets carry no tags. A record is the stack's only while its
//! ownership record stands beside it: a TXT record at `_ihp-infra.<name>`
//! saying `ihp-infra:stack=<prefix>;type=A`, written and deleted in the
//! same atomic change batch as the record itself. A record at one of the
//! stack's names without it was made by someone else: it is never changed,
//! and the plan stops naming it. Deleting the stack's records finds them
//! by their ownership records, so a name dropped from the stack file goes
//! too.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change as RecordChange, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use tokio::sync::OnceCell;

use super::service::{CallError, Created, Service, Wanted, required};
use crate::desired;
use crate::model::{Attrs, Kind, Observed, Ref, Value};
use crate::plan::{AttrChange, Change};

/// A failed Route53 call.
pub type Call = CallError<aws_sdk_route53::Error>;
/// A failed EC2 call (the Elastic IP's address, for a new record).
pub type Ec2Call = CallError<aws_sdk_ec2::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Call(#[from] Call),
    #[error(transparent)]
    Ec2(#[from] Ec2Call),
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
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            Error::Ec2(e) => e.code(),
            _ => None,
        }
    }
}

/// The name of a record's ownership record.
pub fn owner_name(name: &str) -> String {
    format!("_ihp-infra.{name}")
}

/// The ownership record's value (a quoted TXT string).
pub fn owner_value(prefix: &str, kind: &str) -> String {
    format!("\"ihp-infra:stack={prefix};type={kind}\"")
}

/// The stack and record type an ownership record's value names.
fn parse_owner(value: &str) -> Option<(String, String)> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let rest = inner.strip_prefix("ihp-infra:stack=")?;
    let (stack, kind) = rest.split_once(";type=")?;
    Some((stack.to_string(), kind.to_string()))
}

/// A record name as ihp-infra writes it: Route53 answers with the final dot.
fn plain(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

pub struct Route53 {
    client: Client,
    ec2: aws_sdk_ec2::Client,
    prefix: String,
    /// The stack's `dns_zone`, if it names one.
    zone: Option<String>,
    /// Its id, looked up once per run.
    zone_id: OnceCell<String>,
}

/// One live record set, as much of it as ihp-infra reads.
#[derive(Clone, Debug)]
struct Record {
    name: String,
    kind: String,
    ttl: Option<i64>,
    values: Vec<String>,
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
        ec2: aws_sdk_ec2::Client,
        prefix: &str,
        zone: Option<String>,
    ) -> Self {
        Route53 {
            client,
            ec2,
            prefix: prefix.to_string(),
            zone,
            zone_id: OnceCell::new(),
        }
    }

    /// The id of the public zone named `zone`: exactly one, or an error.
    async fn zone_id(&self, zone: &str) -> Result<&str, Error> {
        self.zone_id
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .list_hosted_zones_by_name()
                    .dns_name(zone)
                    .send()
                    .await
                    .map_err(Call::on("find hosted zone", zone))?;
                let mut ids: Vec<String> = out
                    .hosted_zones()
                    .iter()
                    .filter(|z| plain(z.name()) == zone)
                    .filter(|z| !z.config().is_some_and(|c| c.private_zone()))
                    .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
                    .collect();
                ids.sort();
                match ids.as_slice() {
                    [] => Err(Error::NoZone {
                        zone: zone.to_string(),
                    }),
                    [id] => Ok(id.clone()),
                    [first, second, ..] => Err(Error::TwoZones {
                        zone: zone.to_string(),
                        first: first.clone(),
                        second: second.clone(),
                    }),
                }
            })
            .await
            .map(String::as_str)
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

    /// The record (and its ownership record) at `name` of type `kind`, as
    /// they are now.
    async fn live(&self, zone_id: &str, name: &str, kind: &str) -> Result<Vec<Record>, Error> {
        let owner = owner_name(name);
        Ok(self
            .records(zone_id)
            .await?
            .into_iter()
            .filter(|r| (r.name == name && r.kind == kind) || (r.name == owner && r.kind == "TXT"))
            .collect())
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, Error> {
        let Some(zone) = &self.zone else {
            return Ok(Vec::new());
        };
        let zone_id = self.zone_id(zone).await?.to_string();
        let records = self.records(&zone_id).await?;
        // Who wrote each (name, type), by the ownership records.
        let owners: BTreeMap<(String, String), String> = records
            .iter()
            .filter(|r| r.kind == "TXT")
            .filter_map(|r| {
                let name = r.name.strip_prefix("_ihp-infra.")?;
                r.values.iter().find_map(|v| {
                    let (stack, kind) = parse_owner(v)?;
                    Some(((name.to_string(), kind), stack))
                })
            })
            .collect();
        // A name the stack wants that someone else's record holds: stop.
        for d in wanted.of_kind(Kind::DnsRecord) {
            let name = &d.address.role;
            let taken = records.iter().find(|r| {
                &r.name == name
                    && (r.kind == "A" || r.kind == "CNAME")
                    && owners.get(&(r.name.clone(), r.kind.clone())) != Some(&self.prefix)
            });
            if let Some(r) = taken {
                return Err(Error::NotOurs {
                    kind: r.kind.clone(),
                    name: name.clone(),
                    zone: zone.clone(),
                    prefix: self.prefix.clone(),
                    owner: owners.get(&(r.name.clone(), r.kind.clone())).cloned(),
                });
            }
        }
        Ok(records
            .iter()
            .filter(|r| r.kind == "A")
            .filter(|r| owners.get(&(r.name.clone(), r.kind.clone())) == Some(&self.prefix))
            .map(|r| Observed {
                address: desired::dns_record(&r.name),
                id: format!("{} A", r.name),
                tags: BTreeMap::new(),
                attrs: BTreeMap::from([
                    ("zone", Value::Text(zone.clone())),
                    ("name", Value::Text(r.name.clone())),
                    ("type", Value::Text(r.kind.clone())),
                    ("ttl", r.ttl.map(Value::Int).unwrap_or(Value::None)),
                    // Several addresses (edited by hand) differ from any one.
                    ("address", Value::Text(r.values.join(","))),
                ]),
            })
            .collect())
    }

    /// The address a record should hold: given, or the new Elastic IP's.
    async fn address(&self, value: Option<&Value>) -> Result<Option<String>, Error> {
        match value {
            Some(Value::Text(ip)) => Ok(Some(ip.clone())),
            Some(Value::Ref(Ref::Id(allocation))) => {
                let out = self
                    .ec2
                    .describe_addresses()
                    .allocation_ids(allocation)
                    .send()
                    .await
                    .map_err(Ec2Call::on("describe Elastic IP", allocation))?;
                out.addresses()
                    .iter()
                    .find_map(|a| a.public_ip().map(str::to_string))
                    .map(Some)
                    .ok_or_else(|| Error::NoAddress {
                        allocation: allocation.clone(),
                    })
            }
            _ => Ok(None),
        }
    }

    async fn send(
        &self,
        zone_id: &str,
        what: &str,
        changes: Vec<(ChangeAction, Record)>,
    ) -> Result<(), Error> {
        let mut batch =
            ChangeBatch::builder().comment(format!("ihp-infra stack {}: {what}", self.prefix));
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

    fn owner_record(&self, name: &str) -> Record {
        Record {
            name: owner_name(name),
            kind: "TXT".into(),
            ttl: Some(desired::DNS_TTL),
            values: vec![owner_value(&self.prefix, "A")],
        }
    }
}

#[async_trait]
impl Service for Route53 {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::DnsRecord]
    }

    async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, super::Error> {
        Ok(self.observe(wanted).await?)
    }

    async fn create(&self, change: &Change, attrs: &Attrs) -> Result<Created, super::Error> {
        let zone = required(attrs.text("zone"), change, "zone")?;
        let name = required(attrs.text("name"), change, "name")?;
        let ip = required(
            self.address(attrs.0.get("address")).await?,
            change,
            "address",
        )?;
        let zone_id = self.zone_id(zone).await?.to_string();
        let record = Record {
            name: name.to_string(),
            kind: "A".into(),
            ttl: Some(attrs.int("ttl").unwrap_or(desired::DNS_TTL)),
            values: vec![ip],
        };
        // Both or neither: CREATE fails on a record someone made since
        // the plan, and the ownership record is written with it.
        self.send(
            &zone_id,
            &format!("create {name}"),
            vec![
                (ChangeAction::Create, record),
                (ChangeAction::Upsert, self.owner_record(name)),
            ],
        )
        .await?;
        Ok(Created::id(format!("{name} A")))
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
        let name = required(change.observed.text("name"), change, "name")?;
        let ip = required(
            self.address(value("address").as_ref()).await?,
            change,
            "address",
        )?;
        let ttl = match value("ttl") {
            Some(Value::Int(t)) => t,
            _ => desired::DNS_TTL,
        };
        let zone_id = self.zone_id(zone).await?.to_string();
        let record = Record {
            name: name.to_string(),
            kind: "A".into(),
            ttl: Some(ttl),
            values: vec![ip],
        };
        self.send(
            &zone_id,
            &format!("update {name}"),
            vec![
                (ChangeAction::Upsert, record),
                (ChangeAction::Upsert, self.owner_record(name)),
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete(&self, change: &Change, _id: &str) -> Result<Option<String>, super::Error> {
        let Some(zone) = change.observed.text("zone").or(self.zone.as_deref()) else {
            return Ok(None);
        };
        let name = change.address.role.clone();
        let zone_id = self.zone_id(zone).await?.to_string();
        // DELETE must name the record exactly as it is: read it first.
        let live = self.live(&zone_id, &name, "A").await?;
        if live.is_empty() {
            return Ok(None);
        }
        self.send(
            &zone_id,
            &format!("delete {name}"),
            live.into_iter()
                .map(|r| (ChangeAction::Delete, r))
                .collect(),
        )
        .await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_records_name_the_stack_and_type() {
        assert_eq!(owner_name("app.example.com"), "_ihp-infra.app.example.com");
        let value = owner_value("demo", "A");
        assert_eq!(value, "\"ihp-infra:stack=demo;type=A\"");
        assert_eq!(parse_owner(&value), Some(("demo".into(), "A".into())));
        assert_eq!(parse_owner("\"v=spf1 -all\""), None);
        assert_eq!(parse_owner("ihp-infra:stack=demo;type=A"), None, "unquoted");
    }

    #[test]
    fn names_lose_routes_final_dot() {
        assert_eq!(plain("App.Example.com."), "app.example.com");
        assert_eq!(plain("app.example.com"), "app.example.com");
    }
}
