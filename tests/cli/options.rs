//! Issue 18's optional parts together: every combination of a domain
//! (none, records at the registrar, records in a Route53 zone), mail and
//! backups applies, then plans no change; the module they make evaluates.

use crate::common::{Emulator, Needs, Project, stack_yaml};

const REGION: &str = "eu-central-1";
const ZONE: &str = "ihp-test.org";

#[derive(Clone, Copy, Debug)]
enum Domain {
    None,
    AtRegistrar,
    InZone,
}

fn stack_file(n: usize, domain: Domain, mail: bool, backups: bool) -> String {
    let mut text = format!(
        "{}database: {{ enabled: false }}\n",
        stack_yaml(&format!("opt{n}"), REGION)
    );
    match domain {
        Domain::None => {}
        Domain::AtRegistrar => text.push_str(&format!(
            "domain: app{n}.ihp-elsewhere.org\nacme_email: ops@{ZONE}\n"
        )),
        Domain::InZone => text.push_str(&format!(
            "domain: app{n}.{ZONE}\ndomain_aliases: [www{n}.{ZONE}]\nacme_email: ops@{ZONE}\ndns_zone: {ZONE}\n"
        )),
    }
    if mail {
        text.push_str(&format!("mail: {{ from_domain: mail{n}.{ZONE} }}\n"));
    }
    if backups {
        text.push_str("backups: { retention_days: 10 }\n");
    }
    text
}

/// The module's optional parts as Nix evaluates them (None, after saying
/// why, without nix-instantiate).
fn evaluate(module: &std::path::Path) -> Option<serde_json::Value> {
    let nix = crate::handover::tool("nix-instantiate", "IHP_INFRA_NIX_INSTANTIATE")?;
    let expr = format!(
        r#"let
  m = import {} {{
    config.services.ihp.appPort = 8000;
    config.services.postgresqlBackup.location = "/var/backup/postgresql";
    lib = {{ mkForce = v: v; mkDefault = v: v; }};
    pkgs = {{ awscli2 = "/aws"; }};
    modulesPath = "/modules";
  }};
in {{
  env = m.services.ihp.additionalEnvVars;
  domain = m.services.ihp.domain or null;
  backup = m.services.postgresqlBackup.enable or false;
  copy = m.systemd.services.ihp-infra-backup-copy.script or null;
  timer = m.systemd.timers.ihp-infra-backup-copy.timerConfig or null;
}}"#,
        module.display()
    );
    Some(crate::handover::nix_eval(&nix, &expr))
}

#[tokio::test]
async fn every_combination_of_the_options_converges() {
    let Some(emulator) = Emulator::start_for(&[Needs::InstanceProfile, Needs::SesV2]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let route53 = emulator.route53().await;
    route53
        .create_hosted_zone()
        .name(ZONE)
        .caller_reference("options")
        .send()
        .await
        .unwrap();
    let mut n = 0;
    for domain in [Domain::None, Domain::AtRegistrar, Domain::InZone] {
        for mail in [false, true] {
            for backups in [false, true] {
                n += 1;
                let case = format!("{domain:?}, mail {mail}, backups {backups}");
                let p = Project::new(&emulator.endpoint());
                p.write("stack.yaml", &stack_file(n, domain, mail, backups));
                p.run_ok(&["apply", "--auto-approve"], 0);
                let again = p.run(&["plan", "--detailed-exitcode"]);
                assert_eq!(again.code, 0, "{case}: a second plan changes: {again:?}");
                let Some(module) = evaluate(&p.dir.path().join("ihp-infra.nix")) else {
                    continue;
                };
                let expected_domain = match domain {
                    Domain::None => serde_json::Value::Null,
                    Domain::AtRegistrar => format!("app{n}.ihp-elsewhere.org").into(),
                    Domain::InZone => format!("app{n}.{ZONE}").into(),
                };
                assert_eq!(module["domain"], expected_domain, "{case}");
                assert_eq!(
                    module["env"]["SMTP_PORT"],
                    if mail {
                        "587".into()
                    } else {
                        serde_json::Value::Null
                    },
                    "{case}"
                );
                assert_eq!(module["backup"], backups, "{case}");
                if backups {
                    assert_eq!(
                        module["copy"],
                        format!(
                            "/aws/bin/aws s3 sync /var/backup/postgresql s3://opt{n}-backups/ --exclude '*.in-progress.*' --region {REGION} --only-show-errors"
                        ),
                        "{case}"
                    );
                    assert_eq!(module["timer"]["Persistent"], true, "{case}");
                }
            }
        }
    }
}
