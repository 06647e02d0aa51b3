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
    let applied = p.run_ok(&["apply", "--auto-approve"], 0);
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // The SMTP user may only send as the domain; its credentials are the
    // server's, in SSM: the key id, and the password derived from the secret.
    let iam = emulator.iam().await;
    let attached = iam
        .list_attached_user_policies()
        .user_name("post-smtp-user")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = attached
        .attached_policies()
        .iter()
        .filter_map(|a| a.policy_name())
        .collect();
    assert_eq!(names, ["post-ses-send"]);
    let keys = iam
        .list_access_keys()
        .user_name("post-smtp-user")
        .send()
        .await
        .unwrap();
    let key_id = keys.access_key_metadata()[0]
        .access_key_id()
        .unwrap()
        .to_string();
    let ssm = emulator.ssm(REGION).await;
    let parameter = |name: &'static str| {
        let ssm = ssm.clone();
        async move {
            ssm.get_parameter()
                .name(format!("/ihp-infra/post/{name}"))
                .with_decryption(true)
                .send()
                .await
                .unwrap()
                .parameter()
                .unwrap()
                .value()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(parameter("SMTP_USER").await, key_id);
    let password = parameter("SMTP_PASSWORD").await;
    assert_eq!(password.len(), 44, "base64 of a version byte and 32 bytes");
    assert!(password.starts_with('B'), "version 4: {password}");
    for text in [&applied.stdout, &applied.stderr] {
        assert!(
            !text.contains(&password),
            "the SMTP password is never shown"
        );
    }

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
    let user = iam.get_user().user_name("post-smtp-user").send().await;
    assert!(user.is_err(), "the SMTP user goes with mail");
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
