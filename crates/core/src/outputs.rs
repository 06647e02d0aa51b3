//! What the next step needs after an apply: for deploy-to-nixos, the app
//! and vector. The password shows only when asked for (`--show-secrets`);
//! a secret key never: it lives only in its 0600 file.

use serde::Serialize;

use crate::stack::Secret;

/// What DATABASE_URL shows instead of the password.
pub const MASK: &str = "********";

/// The host name IHP's deploy-to-nixos connects to.
pub const SSH_HOST: &str = "production";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Database {
    pub endpoint: String,
    pub port: i32,
    pub username: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    pub instance_dns: Option<String>,
    pub instance_ip: Option<String>,
    /// What the server runs: `x86_64-linux` or `aarch64-linux`.
    pub system: Option<String>,
    pub key_name: String,
    pub database: Option<Database>,
    pub region: String,
    pub bucket: String,
    pub log_group: String,
    /// Where the access key's secret was written, when the stack makes one.
    pub access_key_file: Option<String>,
    /// The stack leaves the server out (`instance: { enabled: false }`).
    pub no_server: bool,
    /// The stack's domain, its records, and what they resolve to now.
    pub domain: Option<Domain>,
    /// Mail through SES, when the stack has it.
    pub mail: Option<Mail>,
}

/// Mail as `output` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Mail {
    pub from_domain: String,
    pub smtp_host: String,
    /// SES lets the app send as the domain.
    pub verified: bool,
    /// Easy DKIM's CNAME records: (name, value).
    pub dkim_records: Vec<(String, String)>,
    /// Whether the account may mail anyone; None: SES didn't say.
    pub production_access: Option<bool>,
}

/// The domain as `output` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Domain {
    pub name: String,
    /// The Route53 zone ihp-infra writes the records to; none: the user
    /// creates them at the registrar.
    pub zone: Option<String>,
    pub records: Vec<DomainRecord>,
}

/// One A record the domain needs, and whether DNS answers it already.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DomainRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The server's address (none until it exists).
    pub value: Option<String>,
    /// What DNS answers for the name here and now (empty: nothing).
    pub resolves_to: Vec<String>,
}

impl DomainRecord {
    /// Whether the name already resolves to the server: the first
    /// deploy's HTTP-01 challenge then succeeds.
    pub fn resolves_here(&self) -> bool {
        self.value
            .as_ref()
            .is_some_and(|v| self.resolves_to.len() == 1 && &self.resolves_to[0] == v)
    }
}

/// The outputs as `ihp-infra output --json` prints them.
#[derive(Debug, Serialize)]
struct Document<'a> {
    region: &'a str,
    instance_dns: Option<&'a str>,
    instance_ip: Option<&'a str>,
    ssh: Option<String>,
    ssh_config: Option<String>,
    db_endpoint: Option<&'a str>,
    db_port: Option<i32>,
    db_username: Option<&'a str>,
    database_url: Option<String>,
    bucket: &'a str,
    log_group: &'a str,
    access_key_file: Option<&'a str>,
    domain: Option<&'a Domain>,
    mail: Option<&'a Mail>,
}

/// A name `ihp-infra output NAME` doesn't know.
#[derive(Debug, thiserror::Error)]
#[error("there is no output {name}; the outputs are {}", Outputs::NAMES.join(", "))]
pub struct UnknownOutput {
    pub name: String,
}

/// Characters a password must not carry raw in a URL's user info.
pub(crate) const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl Outputs {
    /// `postgres://user:password@host:port/postgres`, the password masked
    /// unless given. RDS creates the `postgres` database; the app's tables
    /// go there unless the user makes another.
    pub fn database_url(&self, password: Option<&Secret>) -> Option<String> {
        let db = self.database.as_ref()?;
        let url = crate::handover::database_url(
            &db.username,
            password.map_or("", |p| p.expose()),
            &db.endpoint,
            db.port,
        );
        Some(match password {
            Some(_) => url,
            // The empty password sits between ':' and '@'.
            None => url.replacen(":@", &format!(":{MASK}@"), 1),
        })
    }

    pub fn ssh(&self) -> Option<String> {
        Some(format!("ssh root@{}", self.instance_dns.as_ref()?))
    }

    /// A `~/.ssh/config` block for the host deploy-to-nixos uses.
    pub fn ssh_config(&self) -> Option<String> {
        Some(format!(
            "Host {SSH_HOST}\n    HostName {}\n    User root\n    # the private key of key pair {:?}:\n    # IdentityFile ~/.ssh/{}.pem\n",
            self.instance_dns.as_ref()?,
            self.key_name,
            self.key_name
        ))
    }

    /// The names `ihp-infra output NAME` takes.
    pub const NAMES: [&'static str; 10] = [
        "INSTANCE_URL",
        "INSTANCE_IP",
        "DB_ENDPOINT",
        "DB_USERNAME",
        "DATABASE_URL",
        "AWS_REGION",
        "S3_BUCKET",
        "CLOUDWATCH_LOG_GROUP",
        "S3_ACCESS_KEY_FILE",
        "DOMAIN",
    ];

    /// One value by name: `Err` for a name that isn't one, `Ok(None)` for
    /// one the stack has no value for (no server, no database).
    pub fn value(
        &self,
        name: &str,
        password: Option<&Secret>,
    ) -> Result<Option<String>, UnknownOutput> {
        if !Self::NAMES.contains(&name) {
            return Err(UnknownOutput {
                name: name.to_string(),
            });
        }
        Ok(self
            .all_pairs(password)
            .into_iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v))
    }

    fn pairs(&self, password: Option<&Secret>) -> Vec<(&'static str, String)> {
        self.all_pairs(password)
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    }

    fn all_pairs(&self, password: Option<&Secret>) -> Vec<(&'static str, Option<String>)> {
        let db = self.database.as_ref();
        let pairs = [
            ("INSTANCE_URL", self.instance_dns.clone()),
            ("INSTANCE_IP", self.instance_ip.clone()),
            ("DB_ENDPOINT", db.map(|d| d.endpoint.clone())),
            ("DB_USERNAME", db.map(|d| d.username.clone())),
            ("DATABASE_URL", self.database_url(password)),
            ("AWS_REGION", Some(self.region.clone())),
            ("S3_BUCKET", Some(self.bucket.clone())),
            ("CLOUDWATCH_LOG_GROUP", Some(self.log_group.clone())),
            ("S3_ACCESS_KEY_FILE", self.access_key_file.clone()),
            ("DOMAIN", self.domain.as_ref().map(|d| d.name.clone())),
        ];
        debug_assert!(pairs.iter().map(|(k, _)| *k).eq(Self::NAMES));
        pairs.into()
    }

    /// `KEY=value` lines, for `eval` or an env file; the password masked.
    pub fn to_env(&self) -> String {
        self.env_lines(None)
    }

    fn env_lines(&self, password: Option<&Secret>) -> String {
        self.pairs(password)
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }

    /// What `ihp-infra output` prints: the variables, then SSH, commented:
    /// the whole text is safe to `eval`.
    pub fn to_text(&self, password: Option<&Secret>) -> String {
        let mut out = self.env_lines(password);
        if let Some(domain) = &self.domain {
            out.push_str(&domain_text(domain));
        }
        if let Some(mail) = &self.mail {
            out.push_str(&mail_text(mail));
        }
        match (self.ssh(), self.ssh_config()) {
            (Some(ssh), Some(config)) => {
                let config: String = config.lines().map(|l| format!("# {l}\n")).collect();
                out.push_str(&format!(
                    "\n# Log in:\n# {ssh}\n\n# For ~/.ssh/config (deploy-to-nixos connects to \"{SSH_HOST}\"; \
                     `ihp-infra ssh-config --install` writes it, with the host keys pinned):\n{config}"
                ));
            }
            _ if self.no_server => {
                out.push_str("\n# The stack has no server (instance: { enabled: false }).\n")
            }
            _ => out.push_str("\n# No running server yet: `ihp-infra apply` creates it.\n"),
        }
        out
    }

    pub fn to_json(&self, password: Option<&Secret>) -> String {
        let db = self.database.as_ref();
        let document = Document {
            region: &self.region,
            instance_dns: self.instance_dns.as_deref(),
            instance_ip: self.instance_ip.as_deref(),
            ssh: self.ssh(),
            ssh_config: self.ssh_config(),
            db_endpoint: db.map(|d| d.endpoint.as_str()),
            db_port: db.map(|d| d.port),
            db_username: db.map(|d| d.username.as_str()),
            database_url: self.database_url(password),
            bucket: &self.bucket,
            log_group: &self.log_group,
            access_key_file: self.access_key_file.as_deref(),
            domain: self.domain.as_ref(),
            mail: self.mail.as_ref(),
        };
        serde_json::to_string_pretty(&document).unwrap_or_default()
    }
}

/// Mail: where the app submits it, whether SES lets it send, and what is
/// left to do.
fn mail_text(mail: &Mail) -> String {
    let mut out = format!(
        "\n# Mail as {}: SMTP {}:{} with STARTTLS; SES {}.\n",
        mail.from_domain,
        mail.smtp_host,
        crate::mail::SMTP_PORT,
        if mail.verified {
            "has verified the domain"
        } else {
            "verifies the domain once these DKIM records resolve"
        }
    );
    if !mail.verified {
        for (name, value) in &mail.dkim_records {
            out.push_str(&format!("#   {name} CNAME {value}\n"));
        }
    }
    out.push_str(match mail.production_access {
        Some(true) => "# The account may mail anyone.\n",
        Some(false) => {
            "# The account is in SES's sandbox: it mails only verified addresses. Ask for production access: SES console, Account dashboard, Request production access.\n"
        }
        None => "# SES didn't say whether the account is out of its sandbox (new accounts are in it: see the SES console's Account dashboard).\n",
    });
    out
}

/// The domain's records, commented, and what to do about each.
fn domain_text(domain: &Domain) -> String {
    let mut out = format!(
        "\n# https://{}: nginx gets its Let's Encrypt certificate on a deploy once every name resolves to the server.\n",
        domain.name
    );
    for r in &domain.records {
        let value = r
            .value
            .as_deref()
            .unwrap_or("(the server's address, after apply)");
        let state = if r.resolves_here() {
            "resolves to the server".to_string()
        } else {
            let now = if r.resolves_to.is_empty() {
                "doesn't resolve yet".to_string()
            } else {
                format!("resolves to {} now", r.resolves_to.join(", "))
            };
            match &domain.zone {
                Some(zone) => format!(
                    "{now}: ihp-infra writes it to Route53 zone {zone}; check the zone's delegation at your registrar"
                ),
                None => format!("{now}: create this record at your registrar"),
            }
        };
        out.push_str(&format!("#   {} {} {value}  {state}\n", r.name, r.kind));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Outputs {
        Outputs {
            instance_dns: Some("ec2-1.example".into()),
            instance_ip: Some("203.0.113.7".into()),
            system: Some("x86_64-linux".into()),
            key_name: "my-key".into(),
            database: Some(Database {
                endpoint: "demo-db.rds.example".into(),
                port: 5432,
                username: "postgres_user".into(),
            }),
            region: "eu-central-1".into(),
            bucket: "demo-storage".into(),
            log_group: "/ihp/demo".into(),
            access_key_file: None,
            no_server: false,
            domain: None,
            mail: None,
        }
    }

    #[test]
    fn mail_says_what_is_left_to_do() {
        let mut o = outputs();
        o.mail = Some(Mail {
            from_domain: "example.org".into(),
            smtp_host: crate::mail::smtp_host("eu-central-1"),
            verified: false,
            dkim_records: vec![(
                "t1._domainkey.example.org".into(),
                "t1.dkim.amazonses.com".into(),
            )],
            production_access: Some(false),
        });
        let text = o.to_text(None);
        assert!(
            text.contains("# Mail as example.org: SMTP email-smtp.eu-central-1.amazonaws.com:587 with STARTTLS; SES verifies the domain once these DKIM records resolve.\n#   t1._domainkey.example.org CNAME t1.dkim.amazonses.com\n# The account is in SES's sandbox"),
            "{text}"
        );
        for line in text.lines() {
            assert!(
                line.is_empty() || line.starts_with('#') || line.contains('='),
                "{line:?} would run"
            );
        }
    }

    #[test]
    fn domain_records_say_what_to_do() {
        let mut o = outputs();
        o.domain = Some(Domain {
            name: "app.example.org".into(),
            zone: None,
            records: vec![
                DomainRecord {
                    name: "app.example.org".into(),
                    kind: "A",
                    value: Some("203.0.113.7".into()),
                    resolves_to: vec!["203.0.113.7".into()],
                },
                DomainRecord {
                    name: "www.example.org".into(),
                    kind: "A",
                    value: Some("203.0.113.7".into()),
                    resolves_to: vec![],
                },
            ],
        });
        let text = o.to_text(None);
        assert!(text.contains("DOMAIN=app.example.org\n"), "{text}");
        assert!(
            text.contains("#   app.example.org A 203.0.113.7  resolves to the server\n"),
            "{text}"
        );
        assert!(
            text.contains("#   www.example.org A 203.0.113.7  doesn't resolve yet: create this record at your registrar\n"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&o.to_json(None)).unwrap();
        assert_eq!(json["domain"]["records"][1]["type"], "A");
    }

    #[test]
    fn one_value_by_name() {
        let o = outputs();
        assert_eq!(
            o.value("INSTANCE_IP", None).unwrap().as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(o.value("S3_ACCESS_KEY_FILE", None).unwrap(), None);
        assert!(
            o.value("DATABASE_URL", None)
                .unwrap()
                .unwrap()
                .contains(":********@")
        );
        let e = o.value("instance_ip", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("there is no output instance_ip; the outputs are INSTANCE_URL, ")
        );
    }

    #[test]
    fn text_is_safe_to_eval() {
        for line in outputs().to_text(None).lines() {
            let assignment = line
                .split_once('=')
                .is_some_and(|(k, _)| Outputs::NAMES.contains(&k));
            assert!(
                line.is_empty() || line.starts_with('#') || assignment,
                "{line:?} would run"
            );
        }
    }

    #[test]
    fn text_of_a_stack_without_server_says_so() {
        let o = Outputs {
            no_server: true,
            ..Default::default()
        };
        assert!(
            o.to_text(None)
                .ends_with("# The stack has no server (instance: { enabled: false }).\n"),
            "{}",
            o.to_text(None)
        );
        assert!(
            Outputs::default()
                .to_text(None)
                .contains("No running server yet")
        );
    }

    #[test]
    fn env_lines_skip_what_does_not_exist() {
        let o = Outputs {
            instance_dns: Some("ec2-1.example".into()),
            region: "eu-central-1".into(),
            bucket: "demo-storage".into(),
            log_group: "/ihp/demo".into(),
            ..Default::default()
        };
        assert_eq!(
            o.to_env(),
            "INSTANCE_URL=ec2-1.example\nAWS_REGION=eu-central-1\nS3_BUCKET=demo-storage\nCLOUDWATCH_LOG_GROUP=/ihp/demo\n"
        );
        let json: serde_json::Value = serde_json::from_str(&o.to_json(None)).unwrap();
        assert_eq!(json["bucket"], "demo-storage");
        assert_eq!(json["db_endpoint"], serde_json::Value::Null);
        assert_eq!(json["database_url"], serde_json::Value::Null);
    }

    #[test]
    fn database_url_is_masked_unless_the_password_is_given() {
        let o = outputs();
        assert_eq!(
            o.database_url(None).unwrap(),
            "postgres://postgres_user:********@demo-db.rds.example:5432/postgres"
        );
        let secret = Secret::new("pa:ss#w?rd%1");
        assert_eq!(
            o.database_url(Some(&secret)).unwrap(),
            "postgres://postgres_user:pa%3Ass%23w%3Frd%251@demo-db.rds.example:5432/postgres"
        );
        assert!(!o.to_text(None).contains("pa:ss"));
        assert!(!o.to_json(None).contains("pa%3Ass"));
    }

    #[test]
    fn text_has_the_ssh_line_and_a_host_block_named_production() {
        insta::assert_snapshot!(outputs().to_text(None));
        let json: serde_json::Value = serde_json::from_str(&outputs().to_json(None)).unwrap();
        assert_eq!(json["ssh"], "ssh root@ec2-1.example");
        assert!(
            json["ssh_config"]
                .as_str()
                .unwrap()
                .starts_with("Host production\n    HostName ec2-1.example\n    User root\n")
        );
        assert_eq!(json["instance_ip"], "203.0.113.7");
        assert_eq!(json["db_port"], 5432);
    }
}
