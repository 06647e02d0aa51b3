//! The corpus of broken stack files in tests/cli/bad_stacks: each one gets
//! a clear error naming file, line, column and field, exit 1, no AWS call,
//! no panic, with `validate` and with `apply`.

use std::net::TcpListener;
use std::path::Path;

use crate::common::{PASSWORD, Project};

/// (file, "line:col: field:", a words of the message saying what is allowed)
const CASES: &[(&str, &str, &str)] = &[
    ("01-tab-indent.yaml", "8:2: instance.type:", "tabs"),
    (
        "02-unclosed-quote.yaml",
        "6:15: db_password:",
        "double-quoted",
    ),
    (
        "03-unclosed-flow-map.yaml",
        "6:14: db_password:",
        "unclosed bracket",
    ),
    ("04-duplicate-key.yaml", "7:1: prefix:", "given twice"),
    (
        "05-list-at-top.yaml",
        "1:1: (document):",
        "a stack file is a mapping",
    ),
    (
        "06-scalar-at-top.yaml",
        "1:1: (document):",
        "a stack file is a mapping",
    ),
    (
        "07-bad-indentation.yaml",
        "9:2: instance.volume_size:",
        "did not find expected key",
    ),
    (
        "08-colon-in-plain-value.yaml",
        "8:7: tags.a:",
        "mapping values are not allowed",
    ),
    (
        "09-missing-region.yaml",
        "1:1: region:",
        "missing field `region`; it is required",
    ),
    (
        "10-missing-db-password.yaml",
        "1:1: db_password:",
        "missing field `db_password`",
    ),
    (
        "11-unknown-top-key.yaml",
        "7:1: regoin:",
        "expected one of prefix, region",
    ),
    (
        "12-unknown-instance-key.yaml",
        "8:3: size:",
        "expected one of type, volume_size",
    ),
    (
        "13-unknown-database-key.yaml",
        "8:3: engine:",
        "expected one of engine_version",
    ),
    (
        "14-unknown-storage-key.yaml",
        "8:3: versioning:",
        "expected one of bucket",
    ),
    (
        "15-unknown-logs-key.yaml",
        "8:3: retention:",
        "expected one of group, retention_days",
    ),
    (
        "16-prefix-number.yaml",
        "1:9: prefix:",
        "lower-case letters, digits",
    ),
    (
        "17-region-list.yaml",
        "2:9: region:",
        "must be a single text value",
    ),
    (
        "18-volume-size-text.yaml",
        "8:16: instance.volume_size:",
        "must be a whole number",
    ),
    (
        "19-storage-not-a-map.yaml",
        "7:10: storage:",
        "must be a mapping",
    ),
    (
        "20-public-read-text.yaml",
        "8:16: storage.public_read:",
        "must be true or false",
    ),
    ("21-tags-a-list.yaml", "8:3: tags:", "must be a mapping"),
    (
        "22-retention-float.yaml",
        "8:19: logs.retention_days:",
        "must be a whole number",
    ),
    ("23-prefix-upper-case.yaml", "1:9: prefix:", "lower-case"),
    (
        "24-prefix-double-hyphen.yaml",
        "1:9: prefix:",
        "doubled hyphen",
    ),
    (
        "25-prefix-too-long.yaml",
        "1:9: prefix:",
        "1 to 32 characters",
    ),
    ("26-prefix-empty.yaml", "1:9: prefix:", "is empty"),
    ("27-prefix-trailing-hyphen.yaml", "1:9: prefix:", "trailing"),
    (
        "28-unknown-region.yaml",
        "2:9: region:",
        "allowed: af-south-1",
    ),
    (
        "29-zone-of-other-region.yaml",
        "3:7: az_1:",
        "e.g. eu-central-1a",
    ),
    ("30-same-zones.yaml", "4:7: az_2:", "must differ from az_1"),
    ("31-zone-without-letter.yaml", "3:7: az_1:", "a zone letter"),
    (
        "32-password-too-short.yaml",
        "6:14: db_password:",
        "8 to 128 characters",
    ),
    (
        "33-password-with-at.yaml",
        "6:14: db_password:",
        "contains '@'",
    ),
    (
        "34-password-unquoted-number.yaml",
        "6:14: db_password:",
        "put quotes around",
    ),
    (
        "35-password-env-extra-key.yaml",
        "6:14: db_password:",
        "the only key allowed is `env`",
    ),
    (
        "36-password-too-long.yaml",
        "6:14: db_password:",
        "it has 129",
    ),
    (
        "37-volume-too-small.yaml",
        "8:16: instance.volume_size:",
        "8 to 16384 GB",
    ),
    (
        "38-volume-negative.yaml",
        "8:16: instance.volume_size:",
        "8 to 16384 GB",
    ),
    (
        "39-db-storage-too-big.yaml",
        "8:22: database.allocated_storage:",
        "20 to 65536 GB",
    ),
    (
        "40-retention-not-allowed.yaml",
        "8:19: logs.retention_days:",
        "allowed: 1, 3, 5",
    ),
    (
        "41-instance-type-nonsense.yaml",
        "8:9: instance.type:",
        "e.g. t3.medium",
    ),
    (
        "42-db-class-without-db-prefix.yaml",
        "8:19: database.instance_class:",
        "e.g. db.t3.micro",
    ),
    (
        "43-engine-version-word.yaml",
        "8:19: database.engine_version:",
        "major (\"16\")",
    ),
    (
        "44-bucket-name-upper.yaml",
        "8:11: storage.bucket:",
        "3 to 63 lower-case letters",
    ),
    (
        "45-reserved-tag.yaml",
        "8:9: tags.Name:",
        "set by ihp-infra itself",
    ),
    (
        "46-key-name-empty.yaml",
        "5:11: key_name:",
        "1 to 255 ASCII characters",
    ),
    (
        "47-empty.yaml",
        "1:1: (document):",
        "the stack file is empty",
    ),
    (
        "48-only-comments.yaml",
        "1:1: (document):",
        "the stack file is empty",
    ),
    (
        "49-binary-garbage.yaml",
        "1:1: (document):",
        "not UTF-8 text",
    ),
    ("50-nul-bytes.yaml", "1:13: prefix:", "unexpected character"),
    (
        "51-latin1-not-utf8.yaml",
        "5:14: (document):",
        "save it as UTF-8",
    ),
    // Found by the fuzzer: a `?` key with nothing in it had no field name.
    (
        "52-empty-key-found-by-fuzzer.yaml",
        "2:1: (empty key):",
        "expected one of prefix",
    ),
    // What AWS rejects although the emulators take it (issue 14).
    (
        "53-tag-with-punctuation.yaml",
        "8:9: tags.team:",
        "the tag value contains '&'",
    ),
    (
        "54-too-many-tags.yaml",
        "55:8: tags:",
        "48 tags given; at most 47",
    ),
    (
        "55-log-group-with-hash.yaml",
        "8:10: logs.group:",
        "contains '#'",
    ),
    (
        "56-username-too-long.yaml",
        "8:13: database.username:",
        "1 to 16 letters",
    ),
    // A vowel sign is alphabetic to Rust but not a letter (\p{L}) to AWS;
    // a value with an edge space came back trimmed in the widest-stack test
    // (fidelity.rs), a change on every plan.
    (
        "57-tag-with-vowel-sign.yaml",
        "8:13: tags.language:",
        "the tag value contains 'ि' (U+093F)",
    ),
    (
        "58-tag-with-trailing-space.yaml",
        "8:9: tags.team:",
        "the tag value starts or ends with a space",
    ),
];

fn corpus() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/bad_stacks"))
}

/// The literal `db_password` of a stack file, when it has one long enough
/// not to occur in a message by chance.
fn password_in(file: &Path) -> Option<String> {
    let text = std::fs::read(file).ok()?;
    let text = String::from_utf8_lossy(&text);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("db_password:"))?
        .trim()
        .trim_matches('"');
    (value.len() >= 6 && !value.starts_with('{')).then(|| value.to_string())
}

/// Runs `args` on a stack file against an endpoint that would notice any
/// connection; checks the refusal and returns stderr.
fn refused(file: &Path, args: &[&str]) -> String {
    let wire = TcpListener::bind("127.0.0.1:0").unwrap();
    wire.set_nonblocking(true).unwrap();
    let p = Project::new(&format!("http://{}", wire.local_addr().unwrap()));
    let stack = file.to_str().unwrap();
    let out = p.run(&[args, &["--stack", stack]].concat());
    assert_eq!(out.code, 1, "{stack}: {out:?}");
    assert!(wire.accept().is_err(), "{stack}: an AWS call was made");
    assert!(!out.all().contains("panicked"), "{stack}: {out:?}");
    assert!(!out.all().contains(PASSWORD), "{stack}: {out:?}");
    // The file's own password too (several hold others than PASSWORD).
    if let Some(own) = password_in(file) {
        assert!(
            !out.all().contains(&own),
            "{stack} showed its password: {out:?}"
        );
    }
    assert!(out.stdout.is_empty(), "{stack}: {out:?}");
    out.stderr
}

#[test]
fn every_file_of_the_corpus_is_refused_naming_line_field_and_what_is_allowed() {
    let on_disk = std::fs::read_dir(corpus()).unwrap().count();
    assert_eq!(
        on_disk,
        CASES.len(),
        "every file in bad_stacks has its case"
    );
    assert!(CASES.len() >= 40);
    for (file, place, allowed) in CASES {
        let path = corpus().join(file);
        for args in [&["validate"][..], &["apply", "--auto-approve"]] {
            let stderr = refused(&path, args);
            let expected = format!("{}:{place} ", path.display());
            assert!(
                stderr.contains(&expected) && stderr.contains(allowed),
                "{file} ({args:?}): wanted `{expected}` and `{allowed}` in:\n{stderr}"
            );
        }
    }
}

#[test]
fn huge_file_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut text = String::from("prefix: demo\ntags:\n");
    while text.len() < 3 * 1024 * 1024 {
        text.push_str(&format!("  key{}: {}\n", text.len(), "v".repeat(200)));
    }
    std::fs::write(&path, text).unwrap();
    let stderr = refused(&path, &["plan"]);
    assert!(
        stderr.contains("huge.yaml:1:1: (document): the file is ")
            && stderr.contains("at most 1048576"),
        "{stderr}"
    );
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yaml");
    let depth = 100_000;
    let text = format!("prefix: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    std::fs::write(&path, text).unwrap();
    let stderr = refused(&path, &["validate"]);
    assert!(stderr.contains("deep.yaml:1:"), "{stderr}");
}
