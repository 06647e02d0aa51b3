//! Mail through SES: the domain identity with Easy DKIM, tagged for the
//! stack, what output says is left to do, and the module's SMTP settings.

use crate::common::{Emulator, Needs, Project, bare_stack_yaml};

const REGION: &str = "eu-central-1";

fn with(p: &Project, prefix: &str, extra: &str) {
    p.write(
        "stack.yaml",
        &format!("{}{extra}", bare_stack_yaml(prefix, REGION)),
    );
}

#[tokio::test]
async fn ses_identity_is_made_tagged_and_its_dkim_records_are_listed() {
    let Some(emulator) = Emulator::start_for(&[Needs::SesV2]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let ses = emulator.sesv2(REGION).await;
    let p = Project::new(&emulator.endpoint());
    with(&p, "post", "mail: { from_domain: ihp-test.org }\n");
    let plan = p.run_ok(&["plan"], 0);
    assert!(
        plan.stdout.contains("+ email_identity.mail post-mail")
            && plan.stdout.contains("name = \"ihp-test.org\""),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    let identity = ses
        .get_email_identity()
        .email_identity("ihp-test.org")
        .send()
        .await
        .unwrap();
    assert!(
        identity
            .tags()
            .iter()
            .any(|t| t.key() == "ihp-infra:stack" && t.value() == "post"),
        "{identity:?}"
    );
    let tokens = identity.dkim_attributes().unwrap().tokens().to_vec();
    assert_eq!(tokens.len(), 3, "Easy DKIM");

    let out = p.run_ok(&["output"], 0);
    assert!(
        out.stdout.contains(
            "# Mail as ihp-test.org: SMTP email-smtp.eu-central-1.amazonaws.com:587 with STARTTLS"
        ),
        "{out:?}"
    );
    for t in &tokens {
        assert!(
            out.stdout.contains(&format!(
                "#   {t}._domainkey.ihp-test.org CNAME {t}.dkim.amazonses.com\n"
            )),
            "{out:?}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&p.run_ok(&["output", "--json"], 0).stdout).unwrap();
    assert_eq!(
        json["mail"]["smtp_host"],
        "email-smtp.eu-central-1.amazonaws.com"
    );

    // Turned off, the identity goes; then the section can go too.
    with(
        &p,
        "post",
        "mail: { from_domain: ihp-test.org, enabled: false }\n",
    );
    let plan = p.run_ok(&["plan"], 0);
    assert!(plan.stdout.contains("- email_identity.mail"), "{plan:?}");
    p.run_ok(&["apply", "--auto-approve"], 0);
    let gone = ses
        .get_email_identity()
        .email_identity("ihp-test.org")
        .send()
        .await;
    assert!(gone.is_err(), "{gone:?}");
    p.run_ok(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn ses_identity_of_someone_else_is_not_taken_over() {
    let Some(emulator) = Emulator::start_for(&[Needs::SesV2]) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let ses = emulator.sesv2(REGION).await;
    ses.create_email_identity()
        .email_identity("ihp-other.org")
        .send()
        .await
        .unwrap();
    let p = Project::new(&emulator.endpoint());
    with(&p, "post", "mail: { from_domain: ihp-other.org }\n");
    let out = p.run_ok(&["plan"], 1);
    assert!(
        out.stderr.contains(
            "SES identity ihp-other.org exists but is not part of stack post (it lacks the tag ihp-infra:stack=post)"
        ),
        "{out:?}"
    );
}
