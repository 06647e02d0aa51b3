//! The vocabulary every stage shares: what a resource is called, what its
//! attributes hold, what we want (`Desired`) and what is live (`Observed`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// The kinds of resource ihp-infra manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Vpc,
    InternetGateway,
    Subnet,
    SecurityGroup,
    RouteTable,
    Instance,
    DbSubnetGroup,
    Database,
    Bucket,
    LogGroup,
    IamPolicy,
    IamRole,
    InstanceProfile,
    IamUser,
    AccessKey,
    ElasticIp,
    Parameter,
    DnsRecord,
    EmailIdentity,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::Vpc,
        Kind::InternetGateway,
        Kind::Subnet,
        Kind::SecurityGroup,
        Kind::RouteTable,
        Kind::Instance,
        Kind::DbSubnetGroup,
        Kind::Database,
        Kind::Bucket,
        Kind::LogGroup,
        Kind::IamPolicy,
        Kind::IamRole,
        Kind::InstanceProfile,
        Kind::IamUser,
        Kind::AccessKey,
        Kind::ElasticIp,
        Kind::Parameter,
        Kind::DnsRecord,
        Kind::EmailIdentity,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Vpc => "vpc",
            Kind::InternetGateway => "internet_gateway",
            Kind::Subnet => "subnet",
            Kind::SecurityGroup => "security_group",
            Kind::RouteTable => "route_table",
            Kind::Instance => "instance",
            Kind::DbSubnetGroup => "db_subnet_group",
            Kind::Database => "database",
            Kind::Bucket => "bucket",
            Kind::LogGroup => "log_group",
            Kind::IamPolicy => "iam_policy",
            Kind::IamRole => "iam_role",
            Kind::InstanceProfile => "instance_profile",
            Kind::IamUser => "iam_user",
            Kind::AccessKey => "access_key",
            Kind::ElasticIp => "elastic_ip",
            Kind::Parameter => "parameter",
            Kind::DnsRecord => "dns_record",
            Kind::EmailIdentity => "email_identity",
        }
    }

    /// Whether AWS lets this kind carry tags. An access key can't: it is
    /// found through its user. A DNS record can't either: it is found in
    /// its zone by name and type, and is the stack's only when the stack's
    /// ownership record stands beside it. Their tags are never compared.
    pub fn carries_tags(self) -> bool {
        !matches!(self, Kind::AccessKey | Kind::DnsRecord)
    }

    /// Whether a replacement makes the new one before the old one goes:
    /// an access key's parameters take the new key, then the old key is
    /// deleted, so a server that fetches them never finds a dead key.
    pub fn creates_before_deleting(self) -> bool {
        self == Kind::AccessKey
    }

    /// Kinds this kind can depend on. Used to order deletes of resources
    /// whose role we do not know (left over from an earlier version).
    pub fn parents(self) -> &'static [Kind] {
        match self {
            Kind::Vpc => &[],
            Kind::InternetGateway | Kind::Subnet | Kind::SecurityGroup => &[Kind::Vpc],
            Kind::RouteTable => &[Kind::Vpc, Kind::InternetGateway, Kind::Subnet],
            // The gateway can't be detached while the server's public address is mapped.
            Kind::Instance => &[
                Kind::Subnet,
                Kind::SecurityGroup,
                Kind::InternetGateway,
                Kind::RouteTable,
                Kind::InstanceProfile,
            ],
            Kind::DbSubnetGroup => &[Kind::Subnet],
            Kind::Database => &[Kind::DbSubnetGroup, Kind::SecurityGroup],
            Kind::Bucket | Kind::LogGroup | Kind::IamPolicy => &[],
            // Policies are detached by deleting what they are attached to.
            Kind::IamRole | Kind::IamUser => &[Kind::IamPolicy],
            Kind::InstanceProfile => &[Kind::IamRole],
            Kind::AccessKey => &[Kind::IamUser],
            // Released before the gateway goes: a mapped public address
            // keeps the gateway from being detached.
            Kind::ElasticIp => &[Kind::Instance, Kind::InternetGateway],
            // A parameter holds what these are: it goes before them.
            Kind::Parameter => &[Kind::Database, Kind::AccessKey],
            // Points at the server's address: it goes before the address does.
            Kind::DnsRecord => &[Kind::ElasticIp, Kind::EmailIdentity],
            Kind::EmailIdentity => &[],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A resource's place in the stack: its kind and role (`subnet.public`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub kind: Kind,
    pub role: String,
}

impl Address {
    pub fn new(kind: Kind, role: &str) -> Self {
        Address {
            kind,
            role: role.to_string(),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    /// `kind.role`, as plans print addresses (`instance.app`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, role) = s
            .split_once('.')
            .ok_or_else(|| format!("{s:?} is not an address; addresses look like instance.app"))?;
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.label() == kind)
            .ok_or_else(|| {
                format!(
                    "{kind:?} is not a kind of resource; one of {}",
                    Kind::ALL.map(Kind::label).join(", ")
                )
            })?;
        if role.is_empty() {
            return Err(format!(
                "{s:?} names no role; addresses look like instance.app"
            ));
        }
        Ok(Address::new(kind, role))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.role)
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A reference to another resource: its live id, or, while it does not exist
/// yet (or is being replaced), its address. The executor fills in the id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    Id(String),
    Pending(Address),
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Id(id) => f.write_str(id),
            Ref::Pending(addr) => write!(f, "(id of {addr}, known after apply)"),
        }
    }
}

/// Where a security group rule lets traffic come from or go to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Cidr(String),
    Cidr6(String),
    PrefixList(String),
    Group(Ref),
}

/// One security group rule: protocol ("tcp", or "-1" for all) and port range.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub peer: Peer,
}

impl Rule {
    pub fn tcp(port: i32, peer: Peer) -> Self {
        Rule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            peer,
        }
    }
    pub fn all_traffic(peer: Peer) -> Self {
        Rule {
            protocol: "-1".into(),
            from_port: -1,
            to_port: -1,
            peer,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.protocol.as_str(), self.from_port == self.to_port) {
            ("-1", _) => f.write_str("all traffic")?,
            (p, true) => write!(f, "{p}/{}", self.from_port)?,
            (p, false) => write!(f, "{p}/{}-{}", self.from_port, self.to_port)?,
        }
        match &self.peer {
            Peer::Cidr(c) | Peer::Cidr6(c) => write!(f, " {c}"),
            Peer::PrefixList(p) => write!(f, " prefix list {p}"),
            Peer::Group(r) => write!(f, " group {r}"),
        }
    }
}

/// An element of a set-valued attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    Rule(Rule),
    /// A route: destination CIDR to a gateway.
    Route {
        destination: String,
        gateway: Ref,
    },
    /// A subnet associated with a route table, or in a DB subnet group.
    Subnet(Ref),
    /// A security group an instance or database is in.
    Group(Ref),
    /// A managed policy attached to a role or user.
    Policy(Ref),
    /// The role in an instance profile.
    Role(Ref),
    /// A tag, as key and value.
    Tag(String, String),
}

impl Item {
    /// The live id an item refers to, if it is a resolved reference.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Subnet(Ref::Id(id))
            | Item::Group(Ref::Id(id))
            | Item::Policy(Ref::Id(id))
            | Item::Role(Ref::Id(id)) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Rule(r) => r.fmt(f),
            Item::Route {
                destination,
                gateway,
            } => write!(f, "{destination} -> {gateway}"),
            Item::Subnet(r) | Item::Group(r) | Item::Policy(r) | Item::Role(r) => r.fmt(f),
            Item::Tag(k, v) => write!(f, "{k}={v}"),
        }
    }
}

/// An attribute's value, comparable between desired and observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    Ref(Ref),
    /// A policy document, in canonical JSON; shown as JSON, not quoted.
    Json(String),
    /// Compared, never shown (the database password's hash).
    Sensitive(String),
    /// A desired engine version: met by the same version or a newer one of
    /// the same major ("16" is met by any 16.x).
    AtLeastVersion(String),
    Set(BTreeSet<Item>),
    /// Absent on the live resource (e.g. a gateway attached to nothing).
    None,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Sensitive(_) => f.write_str("(sensitive)"),
            Value::Json(j) => f.write_str(j),
            Value::AtLeastVersion(v) => write!(f, "{v:?}"),
            Value::Ref(r) => r.fmt(f),
            Value::Set(items) => {
                let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::None => f.write_str("(none)"),
        }
    }
}

/// How AWS can change an attribute of a live resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutability {
    InPlace,
    ForcesReplacement,
    /// Used only when creating (the image a server starts from); never compared.
    CreateOnly,
    /// A size that can grow in place and never shrink (disks).
    GrowOnly,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub name: &'static str,
    pub value: Value,
    pub mutability: Mutability,
}

/// A resource as the stack wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub address: Address,
    /// All tags, `Name` and the stack tag included.
    pub tags: BTreeMap<String, String>,
    pub attrs: Vec<Attr>,
    /// Addresses that must exist before this one is created.
    pub depends_on: Vec<Address>,
}

impl Desired {
    pub fn name(&self) -> &str {
        self.tags.get("Name").map(String::as_str).unwrap_or("")
    }
}

/// A live resource that carries the stack's tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub address: Address,
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub attrs: BTreeMap<&'static str, Value>,
}

/// The attribute set a kind's create and update calls read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs(pub BTreeMap<&'static str, Value>);

impl Attrs {
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(
                Value::Text(t) | Value::AtLeastVersion(t) | Value::Sensitive(t) | Value::Json(t),
            ) => Some(t),
            _ => None,
        }
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub fn id(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(Value::Ref(Ref::Id(id))) => Some(id),
            _ => None,
        }
    }
    /// The live ids in a set of references (subnets, groups, policies, roles).
    pub fn ids(&self, name: &str) -> Vec<String> {
        self.set(name)
            .iter()
            .filter_map(Item::id)
            .map(str::to_string)
            .collect()
    }
    pub fn set(&self, name: &str) -> BTreeSet<Item> {
        match self.0.get(name) {
            Some(Value::Set(s)) => s.clone(),
            _ => BTreeSet::new(),
        }
    }
}

/// Whether a live engine version meets a desired one: same major, and
/// at least the desired minor when one is given.
pub fn version_meets(live: &str, desired: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (live, desired) = (parse(live), parse(desired));
    live.first() == desired.first()
        && live.get(1..) >= desired.get(1..).map(|d| &d[..d.len().min(1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_meets("16.4", "16"));
        assert!(version_meets("16.4", "16.4"));
        assert!(
            version_meets("16.6", "16.4"),
            "AWS upgraded the minor itself: no downgrade"
        );
        assert!(!version_meets("16.2", "16.4"));
        assert!(!version_meets("16.4", "17"));
        assert!(!version_meets("17.1", "16"));
        assert!(version_meets("16", "16"));
    }
}
