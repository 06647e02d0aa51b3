//! The widest stack the stack file allows, through every change round and a
//! destroy: every request it makes is checked against AWS's models and
//! naming rules when the emulator stops (requests.rs), so whatever
//! `validate` lets through must also be what AWS accepts.

use crate::common::{Emulator, FULL_STACK, KEY_NAME, Project};

const REGION: &str = "ap-southeast-2";
/// 32 characters: the longest prefix `validate` allows.
const PREFIX: &str = "x-longest-prefix-validate-allows";

/// Text of `len` characters made of everything tags allow: letters of
/// several scripts, digits, spaces and `_ . : / = + - @`.
fn tag_text(seed: usize, len: usize) -> String {
    let alphabet: Vec<char> = "Ünïcødé ßtraße 東京 Ελλάδα москва 0123456789 _.:/=+-@"
        .chars()
        .collect();
    let mut text: Vec<char> = (0..len)
        .map(|i| alphabet[(seed * 7 + i) % alphabet.len()])
        .collect();
    // No space at either end: `validate` refuses it (trimmed by some).
    for end in [0, len - 1] {
        if text[end] == ' ' {
            text[end] = 'x';
        }
    }
    text.into_iter().collect()
}

/// 47 tags (the most `validate` allows), keys and values at their longest.
fn tags(round: usize) -> String {
    let mut yaml = String::from("tags:\n");
    for i in 0..47 {
        let key = format!("k{i:02}{}", tag_text(i, 124));
        let value = tag_text(i + round, 255);
        yaml.push_str(&format!("  {:?}: {:?}\n", key, value));
    }
    yaml
}

fn stack(round: usize) -> String {
    // Every option set, to its longest or largest where it has a limit.
    let bucket = format!(
        "{PREFIX}-bucket-{round}-{}",
        "b".repeat(63 - PREFIX.len() - 10)
    );
    let group = format!("/ihp/{PREFIX}/{round}/{}", "g._-/".repeat(200));
    let group: String = group.chars().take(512).collect();
    let (instance_type, volume, class, storage, password, public_read, access_key, retention) =
        match round {
            0 => (
                "t3.medium",
                30,
                "db.t3.micro",
                20,
                "Pw-0123456789-!#$%^&*()",
                true,
                true,
                3653,
            ),
            _ => (
                "t3.large",
                40,
                "db.t3.small",
                30,
                "~Pw-changed-{}[]|;:',.<>?",
                false,
                false,
                1,
            ),
        };
    format!(
        "prefix: {PREFIX}\nregion: {REGION}\naz_1: {REGION}a\naz_2: {REGION}c\nkey_name: {KEY_NAME}\n\
         db_password: {password:?}\n{tags}\
         instance:\n  type: {instance_type}\n  volume_size: {volume}\n  nixos_release: \"26.05\"\n  architecture: x86_64\n\
         database:\n  engine_version: \"16.4\"\n  instance_class: {class}\n  allocated_storage: {storage}\n  username: u_longest_name16\n\
         storage:\n  bucket: {bucket}\n  public_read: {public_read}\n  access_key: {access_key}\n\
         logs:\n  group: {group:?}\n  retention_days: {retention}\n",
        tags = tags(round),
    )
}

#[tokio::test]
async fn widest_stack_through_every_round_sends_only_what_aws_accepts() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    let no_changes = |p: &Project| {
        let out = p.run_ok(&["plan"], 0);
        assert!(out.stdout.starts_with("No changes"), "{out:?}");
    };

    p.write("stack.yaml", &stack(0));
    p.run_ok(&["validate"], 0);
    p.run_ok(&["apply", "--auto-approve"], 0);
    no_changes(&p);

    // Every setting that changes in place, at once: password, server type
    // and disk, database class and storage, every tag, the bucket's name
    // and policy, the access key, the log group and its retention.
    p.write("stack.yaml", &stack(1));
    p.run_ok(&["apply", "--auto-approve"], 0);
    no_changes(&p);

    // The replacements: a new master user (a new database, the old one's
    // final snapshot) and a pinned image (a new server).
    let replaced = stack(1)
        .replace("username: u_longest_name16", "username: z_other_owner_16")
        .replace(
            "  nixos_release: \"26.05\"\n  architecture: x86_64\n",
            "  ami: ami-0a11c0ffee0251101\n",
        );
    p.write("stack.yaml", &replaced);
    p.run_ok(&["apply", "--auto-approve", "--replace-database"], 0);
    no_changes(&p);

    p.run_ok(&["destroy", "--auto-approve"], 0);
    let checked = emulator.check_requests();
    assert_eq!(checked.violations, Vec::<String>::new());
    // Every round's calls were there to check (the app name is set).
    assert!(checked.checked > 300, "{checked:?}");
}
