//! The domain: its A records in the user's Route53 zone, written only
//! where the stack's ownership record stands, and the module's HTTPS.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use crate::common::{Emulator, Needs, Project, stack_yaml};

const REGION: &str = "eu-central-1";
const ZONE: &str = "ihp-test.org";

/// A stack with a server (the records point at its address) and no
/// database (not what these tests are about).
fn with(p: &Project, prefix: &str, extra: &str) {
    p.write(
        "stack.yaml",
        &format!(
            "{}database: {{ enabled: false }}\nacme_email: ops@{ZONE}\n{extra}",
            stack_yaml(prefix, REGION)
        ),
    );
}

async fn zone(route53: &aws_sdk_route53::Client) -> String {
    let out = route53
        .create_hosted_zone()
        .name(ZONE)
        .caller_reference(format!("test-{}", std::process::id()))
        .send()
        .await
        .unwrap();
    let id = out.hosted_zone().unwrap().id();
    id.trim_start_matches("/hostedzone/").to_string()
}

async fn write_record(
    route53: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
    kind: RrType,
    value: &str,
) {
    let set = ResourceRecordSet::builder()
        .name(name)
        .r#type(kind)
        .ttl(60)
        .resource_records(ResourceRecord::builder().value(value).build().unwrap())
        .build()
        .unwrap();
    route53
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(set)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// The zone's records as (name, type, values), without the zone's own.
async fn records(
    route53: &aws_sdk_route53::Client,
    zone: &str,
) -> Vec<(String, String, Vec<String>)> {
    let out = route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    let mut all: Vec<_> = out
        .resource_record_sets()
        .iter()
        .filter(|r| !matches!(r.r#type(), RrType::Ns | RrType::Soa))
        .map(|r| {
            (
                r.name().trim_end_matches('.').to_string(),
                r.r#type().as_str().to_string(),
                r.resource_records()
                    .iter()
                    .map(|v| v.value().to_string())
                    .collect(),
            )
        })
        .collect();
    all.sort();
    all
}

/// The module's domain settings as Nix evaluates them (None, after saying
/// why, without nix-instantiate).
fn module_values(module: &std::path::Path) -> Option<serde_json::Value> {
    let nix = crate::handover::tool("nix-instantiate", "IHP_INFRA_NIX_INSTANTIATE")?;
    let expr = format!(
        r#"let
  m = import {} {{
    config.services.ihp.appPort = 8000;
    lib = {{ mkForce = v: v; mkDefault = v: v; }};
    pkgs = {{ }};
    modulesPath = "/modules";
  }};
in {{
  domain = m.services.ihp.domain;
  acme = m.security.acme;
  nginx = m.services.nginx;
  ports = m.networking.firewall.allowedTCPPorts;
}}"#,
        module.display()
    );
    Some(crate::handover::nix_eval(&nix, &expr))
}

async fn elastic_ip(ec2: &aws_sdk_ec2::Client, prefix: &str) -> String {
    let out = ec2
        .describe_addresses()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:ihp-infra:stack")
                .values(prefix)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.addresses()[0].public_ip().unwrap().to_string()
}

#[tokio::test]
async fn records_follow_the_domain_and_leave_the_zones_other_records_alone() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let route53 = emulator.route53().await;
    let zone_id = zone(&route53).await;
    // The user's own records, which the stack must never touch.
    write_record(
        &route53,
        &zone_id,
        &format!("mail.{ZONE}"),
        RrType::A,
        "198.51.100.9",
    )
    .await;
    write_record(&route53, &zone_id, ZONE, RrType::Txt, "\"v=spf1 -all\"").await;
    let theirs = records(&route53, &zone_id).await;

    let p = Project::new(&emulator.endpoint());
    with(
        &p,
        "dom",
        &format!("domain: app.{ZONE}\ndomain_aliases: [www.{ZONE}]\ndns_zone: {ZONE}\n"),
    );
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains(&format!("+ dns_record.app.{ZONE}"))
            && plan
                .stdout
                .contains("(id of elastic_ip.app-ip, known after apply)"),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    let ip = elastic_ip(&ec2, "dom").await;
    let owner = "\"ihp-infra:stack=dom;type=A\"".to_string();
    let mut expected = theirs.clone();
    expected.extend([
        (
            format!("_ihp-infra.app.{ZONE}"),
            "TXT".into(),
            vec![owner.clone()],
        ),
        (
            format!("_ihp-infra.www.{ZONE}"),
            "TXT".into(),
            vec![owner.clone()],
        ),
        (format!("app.{ZONE}"), "A".into(), vec![ip.clone()]),
        (format!("www.{ZONE}"), "A".into(), vec![ip.clone()]),
    ]);
    expected.sort();
    assert_eq!(records(&route53, &zone_id).await, expected);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // The module serves the names over HTTPS.
    let module = std::fs::read_to_string(p.dir.path().join("ihp-infra.nix")).unwrap();
    assert!(
        module.contains(&format!(
            "services.ihp.domain = lib.mkForce \"app.{ZONE}\";"
        )) && module.contains(&format!("serverAliases = [ \"www.{ZONE}\" ];")),
        "{module}"
    );
    if let Some(values) = module_values(&p.dir.path().join("ihp-infra.nix")) {
        assert_eq!(values["domain"], format!("app.{ZONE}"));
        assert_eq!(values["acme"]["acceptTerms"], true);
        assert_eq!(values["acme"]["defaults"]["email"], format!("ops@{ZONE}"));
        let host = &values["nginx"]["virtualHosts"][format!("app.{ZONE}")];
        assert_eq!(
            host["serverAliases"],
            serde_json::json!([format!("www.{ZONE}")])
        );
        assert_eq!(host["enableACME"], true);
        assert_eq!(host["forceSSL"], true);
        assert_eq!(host["locations"]["/"]["proxyPass"], "http://127.0.0.1:8000");
        assert_eq!(values["ports"], serde_json::json!([80, 443]));
    }
    let out = p.run_ok(&["output", "DOMAIN"], 0);
    assert_eq!(out.stdout, format!("app.{ZONE}\n"));

    // A record changed by hand is put back.
    write_record(
        &route53,
        &zone_id,
        &format!("app.{ZONE}"),
        RrType::A,
        "192.0.2.1",
    )
    .await;
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains("address   \"192.0.2.1\" -> eipalloc-"),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(records(&route53, &zone_id).await, expected);

    // A new address (the Elastic IP replaced): the records follow it.
    p.run_ok(
        &["apply", "--auto-approve", "--replace", "elastic_ip.app-ip"],
        0,
    );
    let new_ip = elastic_ip(&ec2, "dom").await;
    assert_ne!(new_ip, ip);
    let now = records(&route53, &zone_id).await;
    for name in [format!("app.{ZONE}"), format!("www.{ZONE}")] {
        assert!(
            now.contains(&(name, "A".to_string(), vec![new_ip.clone()])),
            "{now:?}"
        );
    }
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // A name taken out of the stack file goes, with its ownership record.
    with(
        &p,
        "dom",
        &format!("domain: app.{ZONE}\ndns_zone: {ZONE}\n"),
    );
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains(&format!("- dns_record.www.{ZONE}")),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    let now = records(&route53, &zone_id).await;
    assert!(!now.iter().any(|(n, _, _)| n.contains("www.")), "{now:?}");

    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert_eq!(
        records(&route53, &zone_id).await,
        theirs,
        "only the stack's records went"
    );
}

#[tokio::test]
async fn a_record_the_stack_did_not_write_is_never_taken_over() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let route53 = emulator.route53().await;
    let zone_id = zone(&route53).await;
    write_record(
        &route53,
        &zone_id,
        &format!("app.{ZONE}"),
        RrType::A,
        "198.51.100.9",
    )
    .await;
    let p = Project::new(&emulator.endpoint());
    with(
        &p,
        "mine",
        &format!("domain: app.{ZONE}\ndns_zone: {ZONE}\n"),
    );
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr.contains(&format!(
            "the A record app.{ZONE} in zone {ZONE} was not written by stack mine: ihp-infra never changes records it didn't write"
        )),
        "{out:?}"
    );
    // A zone that isn't there is named, with what to do.
    with(
        &p,
        "mine",
        "domain: app.ihp-other.org\ndns_zone: ihp-other.org\n",
    );
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr
            .contains("no public hosted zone ihp-other.org in this account"),
        "{out:?}"
    );
    assert_eq!(
        records(&route53, &zone_id).await,
        vec![(
            format!("app.{ZONE}"),
            "A".to_string(),
            vec!["198.51.100.9".to_string()]
        )]
    );
}

#[tokio::test]
async fn without_a_zone_output_lists_the_records_to_create() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    let ec2 = emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "reg", &format!("domain: app.{ZONE}\n"));
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains(&format!(
            "DNS is yours to set (the stack names no dns_zone): at your registrar, point app.{ZONE} (A) at the server's address"
        )) && !plan.stdout.contains("dns_record"),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    let ip = elastic_ip(&ec2, "reg").await;
    let out = p.run_ok(&["output"], 0);
    assert!(
        out.stdout.contains(&format!("#   app.{ZONE} A {ip}  "))
            && out.stdout.contains("create this record at your registrar"),
        "{out:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&p.run_ok(&["output", "--json"], 0).stdout).unwrap();
    assert_eq!(json["domain"]["records"][0]["value"], ip.as_str());
    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
}

#[tokio::test]
async fn records_are_found_by_the_zone_the_address_remembers() {
    // Regression (review of the domain change): records in a zone the
    // stack file stopped naming were never found again, so destroy left
    // them pointing at a released address.
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let route53 = emulator.route53().await;
    let zone_id = zone(&route53).await;
    let p = Project::new(&emulator.endpoint());
    with(
        &p,
        "mem",
        &format!("domain: app.{ZONE}\ndns_zone: {ZONE}\n"),
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(
        records(&route53, &zone_id).await.len(),
        2,
        "the record and its owner"
    );

    // domain and dns_zone gone from the file: the records go too.
    let without_domain = format!(
        "{}database: {{ enabled: false }}\n",
        stack_yaml("mem", REGION)
    );
    p.write("stack.yaml", &without_domain);
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains(&format!("- dns_record.app.{ZONE}")),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(records(&route53, &zone_id).await, vec![]);

    // Back, then destroyed by a file that names no zone: found all the same.
    with(
        &p,
        "mem",
        &format!("domain: app.{ZONE}\ndns_zone: {ZONE}\n"),
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.write("stack.yaml", &without_domain);
    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert_eq!(records(&route53, &zone_id).await, vec![]);
}

#[tokio::test]
async fn dkim_records_go_to_the_zone_that_holds_the_mail_domain() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile, Needs::SesV2]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let route53 = emulator.route53().await;
    let ses = emulator.sesv2(REGION).await;
    let zone_id = zone(&route53).await;
    let p = Project::new(&emulator.endpoint());
    with(
        &p,
        "dk",
        &format!("domain: app.{ZONE}\ndns_zone: {ZONE}\nmail: {{ from_domain: {ZONE} }}\n"),
    );
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains("+ dns_record.dkim-1")
            && plan
                .stdout
                .contains("(id of email_identity.mail, known after apply)"),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    let identity = ses
        .get_email_identity()
        .email_identity(ZONE)
        .send()
        .await
        .unwrap();
    let tokens = identity.dkim_attributes().unwrap().tokens().to_vec();
    let now = records(&route53, &zone_id).await;
    for (n, t) in tokens.iter().enumerate() {
        assert!(
            now.contains(&(
                format!("{t}._domainkey.{ZONE}"),
                "CNAME".to_string(),
                vec![format!("{t}.dkim.amazonses.com")]
            )),
            "{now:?}"
        );
        assert!(
            now.contains(&(
                format!("_ihp-infra.{t}._domainkey.{ZONE}"),
                "TXT".to_string(),
                vec![format!(
                    "\"ihp-infra:stack=dk;type=CNAME;role=dkim-{}\"",
                    n + 1
                )]
            )),
            "{now:?}"
        );
    }
    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
    assert_eq!(records(&route53, &zone_id).await, vec![]);
}
