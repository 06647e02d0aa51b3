//! Bad stack files: a clear error naming file, line, column and field, exit
//! 1, and no AWS call. Runs without an emulator: the endpoint is a listener
//! that only notes whether anyone connected.

use std::net::TcpListener;

use crate::common::{PASSWORD, Project, stack_yaml};

/// An endpoint that records connection attempts and never answers.
struct Tripwire(TcpListener);

impl Tripwire {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Tripwire(l)
    }
    fn endpoint(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }
    fn touched(&self) -> bool {
        self.0.accept().is_ok()
    }
}

fn refused(stack: &str, command: &str) -> String {
    let wire = Tripwire::new();
    let p = Project::new(&wire.endpoint());
    p.write("stack.yaml", stack);
    let out = p.run(&[command]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!wire.touched(), "an AWS call was made for an invalid stack");
    assert!(!out.all().contains(PASSWORD), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    out.stderr
}

fn valid() -> String {
    stack_yaml("demo", "eu-central-1")
}

#[test]
fn valid_stack_validates_without_aws() {
    let wire = Tripwire::new();
    let p = Project::new(&wire.endpoint());
    p.write("stack.yaml", &valid());
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "stack.yaml is valid: stack demo in eu-central-1 (eu-central-1a, eu-central-1b)\n"
    );
    assert!(!wire.touched());
}

#[test]
fn every_problem_named_with_file_line_column_and_field() {
    let stack = valid()
        .replace("prefix: demo", "prefix: My_App")
        .replace("az_2: eu-central-1b", "az_2: us-east-1b")
        .replace(PASSWORD, "pass word");
    let stderr = refused(&stack, "validate");
    insta::assert_snapshot!("bad_fields", stderr);
    for command in ["plan", "apply", "destroy"] {
        assert_eq!(
            refused(&stack, command),
            stderr,
            "{command} validates as validate does"
        );
    }
}

#[test]
fn misspelt_key_is_an_error() {
    let stderr = refused(&format!("{}regoin: eu-west-1\n", valid()), "plan");
    assert!(
        stderr.contains("stack.yaml:7:1: regoin: unknown field `regoin`"),
        "{stderr}"
    );
}

#[test]
fn missing_field_is_named() {
    let stderr = refused(&valid().replace("key_name: test-key\n", ""), "validate");
    assert!(
        stderr.contains("key_name: missing field `key_name`"),
        "{stderr}"
    );
}

#[test]
fn yaml_syntax_error_has_a_location() {
    let stderr = refused(
        &valid().replace("region: eu-central-1", "region: [eu-central-1"),
        "validate",
    );
    assert!(stderr.contains("stack.yaml:2:"), "{stderr}");
}

#[test]
fn unknown_region_lists_the_allowed_ones() {
    let stderr = refused(
        &valid().replace("region: eu-central-1", "region: eu-centrl-1"),
        "validate",
    );
    assert!(
        stderr.contains("stack.yaml:2:9: region: unknown region \"eu-centrl-1\""),
        "{stderr}"
    );
    assert!(stderr.contains("us-east-1"), "{stderr}");
}

#[test]
fn password_from_an_unset_environment_variable() {
    let stderr = refused(
        &valid().replace(&format!("\"{PASSWORD}\""), "{ env: IHP_TEST_UNSET_PW }"),
        "plan",
    );
    assert!(
        stderr.contains("db_password: environment variable IHP_TEST_UNSET_PW is not set"),
        "{stderr}"
    );
}

#[test]
fn password_from_the_environment_is_checked_and_not_printed() {
    let wire = Tripwire::new();
    let p = Project::new(&wire.endpoint());
    p.write(
        "stack.yaml",
        &valid().replace(&format!("\"{PASSWORD}\""), "{ env: DB_PW }"),
    );
    let out = p
        .command(&["validate"])
        .env("DB_PW", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = p
        .command(&["validate"])
        .env("DB_PW", "has@sign-in-it")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the value of environment variable DB_PW contains '@'"),
        "{stderr}"
    );
    assert!(!stderr.contains("has@sign-in-it"));
}

#[test]
fn empty_and_missing_files() {
    let stderr = refused("", "validate");
    assert!(
        stderr.contains("stack.yaml:1:1: (document): the stack file is empty"),
        "{stderr}"
    );

    let p = Project::new("http://127.0.0.1:9");
    let out = p.run(&["plan", "--stack", "nowhere.yaml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("failed to read stack file nowhere.yaml"),
        "{out:?}"
    );
}

#[test]
fn usage_error_is_not_a_panic() {
    let p = Project::new("http://127.0.0.1:9");
    let out = p.run(&["plan", "--no-such-flag"]);
    assert_eq!(out.code, 1, "usage errors exit 1; 2 means changes for plan");
    assert!(out.stderr.contains("--no-such-flag"), "{out:?}");
}
