//! Every request ihp-infra sent during a test, checked against what real AWS
//! accepts (botocore's models and AWS's documented naming rules) when the
//! test's emulator stops: the emulators take requests AWS rejects, so the
//! next such gap fails the test that made it. The rules live in
//! `check_requests.py`; one checker process serves the whole test run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

struct Checker {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The LocalStack venv's Python: it has botocore's models, LocalStack's
/// request parser and the `regex` module. `scripts/test` names it.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("IHP_INFRA_LOCALSTACK_PYTHON") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("IHP_INFRA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ihp-infra")
        });
    cache.join("localstack-2026.3.0/bin/python")
}

fn start() -> Checker {
    let python = python();
    assert!(
        python.exists(),
        "the request checker needs LocalStack's venv at {}: run `./localstack/localstack.sh install` (the README's test command does)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cli/check_requests.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("failed to start the request checker");
    // It ends when this process does: its stdin closes.
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    Checker {
        _child: child,
        stdin,
        stdout,
    }
}

/// What the checker found in one recording.
#[derive(Debug)]
pub struct Checked {
    /// How many requests ihp-infra sent (and were checked).
    pub checked: usize,
    /// What AWS would reject, one line each: "service Operation Param: rule".
    pub violations: Vec<String>,
}

/// Checks `recording` (moto's JSON-lines shape).
pub fn check(recording: &Path) -> Checked {
    static CHECKER: OnceLock<Mutex<Checker>> = OnceLock::new();
    let mut checker = CHECKER
        .get_or_init(|| Mutex::new(start()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    writeln!(checker.stdin, "{}", recording.display()).expect("request checker is gone");
    checker.stdin.flush().unwrap();
    let mut answer = String::new();
    checker
        .stdout
        .read_line(&mut answer)
        .expect("request checker is gone");
    let parsed: Option<Checked> = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| {
            Some(Checked {
                checked: v["checked"].as_u64()? as usize,
                violations: v["violations"]
                    .as_array()?
                    .iter()
                    .filter_map(|l| Some(l.as_str()?.to_string()))
                    .collect(),
            })
        });
    parsed.unwrap_or_else(|| panic!("request checker answered {answer:?}"))
}

#[test]
fn checker_finds_what_aws_rejects_in_ihp_infras_requests_only() {
    // Requests of a real run, edited to break one rule each (and one sent
    // by another client, which is not ours to check).
    let found = check(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cli/requests/rejected_by_aws.jsonl"
    )));
    let expected = [
        r"logs CreateLogGroup tags key: pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]+)$, is 'R&D'",
        "logs CreateLogGroup tags 'R&D': only letters, digits, spaces and _ . : / = + - @ in tags",
        "logs PutRetentionPolicy retentionInDays: one of [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], is 31",
        "s3 PutBucketTagging Tagging.TagSet 'aws:name': tag keys must not start with aws:",
        "ec2 CreateSecurityGroup GroupName: must not start with sg-, is 'sg-app'",
        "ec2 AuthorizeSecurityGroupIngress IpPermissions[0].IpRanges[0].Description: up to 255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*, is \"it's\"",
        "rds CreateDBInstance DBInstanceIdentifier: no two hyphens in a row, no hyphen at the end, is 'rec--db'",
        "rds CreateDBInstance MasterUserPassword: printable ASCII but '/', '\"', '@' and space, is (sensitive)",
        "iam CreateRole AssumeRolePolicyDocument: required, missing",
        "iam CreateRole RoleName: at most 64 characters, has 65",
    ];
    assert_eq!(found.violations, expected);
    // The one sent by another client (no `app/ihp-infra`) is not counted.
    assert_eq!(found.checked, 8);
}
