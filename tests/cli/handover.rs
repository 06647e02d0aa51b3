//! The hand-over: after apply, the server gets everything from AWS itself.
//! Secrets go to the stack's SSM parameters, the NixOS module carries the
//! rest, and the module's own fetch command, run here against the
//! emulator, writes the environment file the app's units read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Emulator, FULL_STACK, KEY_NAME, Project, bare_stack_yaml};
use crate::network::tagged;

const REGION: &str = "eu-central-1";

/// A program this test needs from the machine, or None after saying why
/// the test skips (scripts/test installs them).
pub fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        eprintln!("skipped: {name} is not installed (scripts/test installs it; or set {env})");
    }
    found
}

/// The module's values, evaluated by Nix with a stub of what a NixOS
/// system would pass it: `pkgs` whose tools live in `tools`.
fn evaluate(module: &Path, system: &str, tools: &Path) -> serde_json::Value {
    let nix = tool("nix-instantiate", "IHP_INFRA_NIX_INSTANTIATE").expect("checked by the caller");
    let parsed = Command::new(&nix)
        .arg("--parse")
        .arg(module)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let expr = format!(
        r#"let
  pkgs = {{
    awscli2 = "{tools}";
    jq = "{tools}";
    writeShellScript = name: text: text;
    writeTextDir = path: text: {{ inherit path text; }};
    stdenv.hostPlatform.system = "{system}";
  }};
  m = import {module} {{ config = {{ }}; lib = {{ }}; inherit pkgs; modulesPath = "/modules"; }};
in {{
  inherit (m) imports assertions;
  databaseUrl = m.services.ihp.databaseUrl or null;
  env = m.services.ihp.additionalEnvVars;
  script = m.systemd.services.ihp-infra-secrets.serviceConfig.ExecStart;
  unit = m.systemd.services.ihp-infra-secrets.serviceConfig;
  dropIns = m.systemd.packages;
  vector = m.services.vector.settings;
}}"#,
        tools = tools.display(),
        module = module.display(),
    );
    nix_eval(&nix, &expr)
}

/// A Nix expression's value, evaluated strictly as JSON (read-only: no
/// store writes). `nix` is nix-instantiate.
pub fn nix_eval(nix: &Path, expr: &str) -> serde_json::Value {
    let out = Command::new(nix)
        .args([
            "--eval",
            "--strict",
            "--json",
            "--readonly-mode",
            "-E",
            expr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A folder with `bin/aws` and `bin/jq`: what the module's `pkgs.awscli2`
/// and `pkgs.jq` stand for on the server.
fn tools() -> Option<tempfile::TempDir> {
    let aws = tool("aws", "IHP_INFRA_AWS_CLI")?;
    let jq = tool("jq", "IHP_INFRA_JQ")?;
    tool("nix-instantiate", "IHP_INFRA_NIX_INSTANTIATE")?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(aws, dir.path().join("bin/aws")).unwrap();
    std::os::unix::fs::symlink(jq, dir.path().join("bin/jq")).unwrap();
    Some(dir)
}

/// Runs the module's fetch script as systemd would (RUNTIME_DIRECTORY set),
/// with the server's role played by the test credentials; returns the
/// environment file's path.
fn fetch(p: &Project, script: &str) -> (PathBuf, std::process::Output) {
    let run = p.dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let script_path = p.dir.path().join("fetch.sh");
    std::fs::write(&script_path, script).unwrap();
    let out = Command::new("bash")
        .arg(&script_path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", p.dir.path())
        .env("RUNTIME_DIRECTORY", &run)
        .env("AWS_ENDPOINT_URL", &p.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    (run.join("env"), out)
}

/// A variable of an environment file as systemd reads it: for the
/// double-quoted lines the module writes, a shell's reading is the same
/// (`\` unescapes exactly `"`, `\`, `` ` `` and `$` in both).
fn read_env(file: &Path, name: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -a; . '{}'; printf '%s' \"${name}\"",
            file.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

async fn parameter(emulator: &Emulator, name: &str) -> Option<String> {
    emulator
        .ssm(REGION)
        .await
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .ok()?
        .parameter()?
        .value()
        .map(str::to_string)
}

/// Deletes the stack's stored S3 secret, as a user or a killed run could.
async fn forget_secret(emulator: &Emulator, prefix: &str) {
    emulator
        .ssm(REGION)
        .await
        .delete_parameter()
        .name(format!("/ihp-infra/{prefix}/AWS_SECRET_ACCESS_KEY"))
        .send()
        .await
        .unwrap();
}

async fn parameter_names(emulator: &Emulator, prefix: &str) -> Vec<String> {
    let out = emulator
        .ssm(REGION)
        .await
        .get_parameters_by_path()
        .path(format!("/ihp-infra/{prefix}/"))
        .recursive(true)
        .send()
        .await
        .unwrap();
    let mut names: Vec<String> = out
        .parameters()
        .iter()
        .filter_map(|p| p.name().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn live_key_ids(emulator: &Emulator, user: &str) -> Vec<String> {
    emulator
        .iam()
        .await
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key_metadata()
        .iter()
        .filter_map(|k| k.access_key_id().map(str::to_string))
        .collect()
}

// Every character a shell, systemd or a URL could misread, and none RDS
// refuses ('/', '@', '"' and space).
const AWKWARD: &str = r"Pa$s'w\o#r%d`1";
const AWKWARD_2: &str = r"N3w$'pa\ss#%";

fn awkward_stack(prefix: &str, password: &str) -> String {
    format!(
        "prefix: {prefix}\nregion: {REGION}\naz_1: {REGION}a\naz_2: {REGION}b\nkey_name: {KEY_NAME}\ndb_password: '{}'\n",
        password.replace('\'', "''")
    )
}

#[tokio::test]
async fn apply_hands_the_server_its_secrets_through_ssm_and_the_module() {
    let Some(emulator) = Emulator::start_for(FULL_STACK) else {
        return;
    };
    let Some(tools) = tools() else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &awkward_stack("hand", AWKWARD));
    let applied = p.run_ok(&["apply", "--auto-approve"], 0);
    let module_path = p.dir.path().join("ihp-infra.nix");
    assert!(
        applied.stderr.contains("Wrote ihp-infra.nix"),
        "{applied:?}"
    );
    assert!(
        !p.dir.path().join("s3_access_key.env").exists(),
        "the key goes to SSM; a local file only when asked"
    );
    assert_eq!(
        parameter_names(&emulator, "hand").await,
        [
            "/ihp-infra/hand/AWS_ACCESS_KEY_ID",
            "/ihp-infra/hand/AWS_SECRET_ACCESS_KEY",
            "/ihp-infra/hand/DATABASE_URL"
        ]
    );
    let key_ids = live_key_ids(&emulator, "hand-s3-user").await;
    assert_eq!(key_ids.len(), 1, "{key_ids:?}");
    let secret = parameter(&emulator, "/ihp-infra/hand/AWS_SECRET_ACCESS_KEY")
        .await
        .unwrap();
    assert!(secret.len() >= 20, "a real secret key");

    // The module: values right, no secret, and it evaluates.
    let module = std::fs::read_to_string(&module_path).unwrap();
    let encoded =
        percent_encoding::utf8_percent_encode(AWKWARD, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    for secret in [AWKWARD, &encoded, "w%5Co%23r", &secret] {
        assert!(!module.contains(secret), "a secret in the module: {module}");
    }
    for output in [&applied.stdout, &applied.stderr] {
        assert!(!output.contains(&secret), "the S3 secret was printed");
        assert!(
            !output.contains("w%5Co%23r"),
            "the encoded password was printed"
        );
    }
    let values = evaluate(&module_path, "x86_64-linux", tools.path());
    assert_eq!(
        values["imports"],
        serde_json::json!(["/modules/virtualisation/amazon-image.nix"])
    );
    assert_eq!(values["assertions"][0]["assertion"], true);
    let outputs = p.run_ok(&["output", "--json"], 0);
    let outputs: serde_json::Value = serde_json::from_str(&outputs.stdout).unwrap();
    let endpoint = outputs["db_endpoint"].as_str().unwrap().to_string();
    assert_eq!(
        values["databaseUrl"],
        format!("postgres://postgres_user@{endpoint}:5432/postgres")
    );
    assert_eq!(
        values["env"],
        serde_json::json!({ "AWS_REGION": REGION, "S3_BUCKET": "hand-storage" })
    );
    assert_eq!(values["unit"]["RuntimeDirectoryMode"], "0700");
    let drop_ins: Vec<&str> = values["dropIns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        drop_ins,
        [
            "lib/systemd/system/app.service.d/ihp-infra.conf",
            "lib/systemd/system/worker.service.d/ihp-infra.conf",
            "lib/systemd/system/migrate.service.d/ihp-infra.conf",
            "lib/systemd/system/loadSchema.service.d/ihp-infra.conf"
        ]
    );
    assert!(
        values["dropIns"][0]["text"]
            .as_str()
            .unwrap()
            .contains("EnvironmentFile=/run/ihp-infra/env\n")
    );
    assert_eq!(
        values["vector"]["sinks"]["cloudwatch"]["group_name"],
        "/ihp/hand"
    );
    assert_eq!(values["vector"]["sinks"]["cloudwatch"]["region"], REGION);

    // A t4g server with an x86_64 configuration fails with what to change.
    let arm = evaluate(&module_path, "aarch64-linux", tools.path());
    assert_eq!(arm["assertions"][0]["assertion"], false);
    assert!(
        arm["assertions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("set system = \"x86_64-linux\" in Config/nix/hosts/production/host.nix")
    );

    // The fetch, as the server runs it.
    let script = values["script"].as_str().unwrap();
    let (env_file, out) = fetch(&p, script);
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The password percent-encoded where a URL's user info needs it.
    let url =
        |encoded: &str| format!("postgres://postgres_user:{encoded}@{endpoint}:5432/postgres");
    let database_url = read_env(&env_file, "DATABASE_URL");
    assert_eq!(database_url, url("Pa$s'w%5Co%23r%25d%601"));
    assert_eq!(read_env(&env_file, "AWS_ACCESS_KEY_ID"), key_ids[0]);
    assert_eq!(read_env(&env_file, "AWS_SECRET_ACCESS_KEY"), secret);
    for output in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(output).contains(&secret));
    }
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // A new password: the parameter follows in the same apply; the module
    // says the same and is not rewritten.
    p.write("stack.yaml", &awkward_stack("hand", AWKWARD_2));
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.stdout.contains(
            "~ parameter.database-url hand-database-url (/ihp-infra/hand/DATABASE_URL)\n        value   (sensitive) -> (sensitive)\n"
        ),
        "{plan:?}"
    );
    let applied = p.run_ok(&["apply", "--auto-approve"], 0);
    assert!(
        applied.stderr.contains("Unchanged: ihp-infra.nix"),
        "{applied:?}"
    );
    assert_eq!(std::fs::read_to_string(&module_path).unwrap(), module);
    let (env_file, out) = fetch(&p, script);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        read_env(&env_file, "DATABASE_URL"),
        url("N3w$'pa%5Css%23%25")
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // Destroy deletes the parameters with the rest.
    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert_eq!(
        parameter_names(&emulator, "hand").await,
        Vec::<String>::new()
    );
    assert_eq!(tagged(&emulator, "hand").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_key_whose_secret_is_lost_is_replaced_and_a_local_one_is_taken_over() {
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &bare_stack_yaml("keys", REGION));
    p.run_ok(&["apply", "--auto-approve"], 0);
    let first = live_key_ids(&emulator, "keys-s3-user").await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        parameter(&emulator, "/ihp-infra/keys/AWS_ACCESS_KEY_ID").await,
        Some(first[0].clone())
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // The secret's parameter gone (deleted by hand, or a run killed between
    // the key and its parameter): the key is of no use, so it is replaced.
    forget_secret(&emulator, "keys").await;
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.stdout.contains("-/+ access_key.s3-user-key"),
        "{plan:?}"
    );
    let before = emulator.actions().len();
    p.run_ok(&["apply", "--auto-approve"], 0);
    let second = live_key_ids(&emulator, "keys-s3-user").await;
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    // New key, stored, then the old one deleted: a server that fetches its
    // parameters meanwhile never finds a dead key.
    let order: Vec<String> = emulator.actions()[before..]
        .iter()
        .filter(|a| ["CreateAccessKey", "PutParameter", "DeleteAccessKey"].contains(&a.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        order,
        [
            "CreateAccessKey",
            "PutParameter",
            "PutParameter",
            "DeleteAccessKey"
        ]
    );

    // A run killed between the new key and the old one's delete leaves two:
    // the one whose secret is stored stays, the other goes.
    let extra = emulator
        .iam()
        .await
        .create_access_key()
        .user_name("keys-s3-user")
        .send()
        .await
        .unwrap();
    let extra = extra.access_key().unwrap().access_key_id().to_string();
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        plan.stdout.contains(&format!(
            "- access_key.s3-user-key-{} ",
            extra.to_lowercase()
        )) && plan
            .stdout
            .contains("Plan: 0 to add, 0 to change, 0 to replace, 1 to destroy."),
        "{plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(live_key_ids(&emulator, "keys-s3-user").await, second);
    assert_eq!(
        parameter(&emulator, "/ihp-infra/keys/AWS_ACCESS_KEY_ID").await,
        Some(second[0].clone())
    );
    assert!(
        parameter(&emulator, "/ihp-infra/keys/AWS_SECRET_ACCESS_KEY")
            .await
            .is_some()
    );
    p.run_ok(&["plan", "--detailed-exitcode"], 0);

    // A stack from before the hand-over: its key's secret only in the local
    // file. The key stays; its parameters are written from the file.
    p.write(
        "stack.yaml",
        &format!(
            "{}storage:\n  key_file: true\n",
            bare_stack_yaml("keys", REGION)
        ),
    );
    forget_secret(&emulator, "keys").await;
    p.run_ok(&["apply", "--auto-approve"], 0);
    let third = live_key_ids(&emulator, "keys-s3-user").await;
    let file = std::fs::read_to_string(p.dir.path().join("s3_access_key.env")).unwrap();
    assert!(
        file.contains(&format!("AWS_ACCESS_KEY_ID={}\n", third[0])),
        "{file}"
    );
    let mode = std::fs::metadata(p.dir.path().join("s3_access_key.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    forget_secret(&emulator, "keys").await;
    let plan = p.run_ok(&["plan", "--detailed-exitcode"], 2);
    assert!(
        !plan.stdout.contains("access_key.s3-user-key")
            && plan.stdout.contains("+ parameter.s3-secret-key"),
        "the secret is in the local file: the key stays: {plan:?}"
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(live_key_ids(&emulator, "keys-s3-user").await, third);
    let secret = parameter(&emulator, "/ihp-infra/keys/AWS_SECRET_ACCESS_KEY")
        .await
        .unwrap();
    assert!(file.contains(&format!("AWS_SECRET_ACCESS_KEY={secret}\n")));
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert_eq!(
        parameter_names(&emulator, "keys").await,
        Vec::<String>::new()
    );
}

/// A host key made with ssh-keygen: its public line's type and base64,
/// and the `ssh-keygen -l` line the server's console would show.
fn host_key(dir: &Path, name: &str, kind: &str) -> (String, String) {
    let path = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "root@ihp", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let listed = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(path.with_extension("pub"))
        .output()
        .unwrap();
    let mut parts = public.split_whitespace();
    let line = format!("{} {}", parts.next().unwrap(), parts.next().unwrap());
    (line, String::from_utf8(listed.stdout).unwrap())
}

fn console(fingerprint_lines: &[&str]) -> String {
    let mut text =
        String::from("[    4.2] Starting sshd...\r\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n");
    for line in fingerprint_lines {
        text.push_str(line.trim_end());
        text.push_str("\r\n");
    }
    text.push_str("-----END SSH HOST KEY FINGERPRINTS-----\r\n");
    text
}

#[tokio::test]
async fn ssh_config_pins_the_host_keys_the_console_vouches_for() {
    let Some(emulator) = Emulator::start_for(&[crate::common::Needs::InstanceProfile]) else {
        return;
    };
    if tool("ssh-keygen", "IHP_INFRA_SSH_KEYGEN").is_none() {
        return;
    }
    emulator.ec2_with_key(REGION).await;
    let console_text = std::sync::Arc::new(std::sync::Mutex::new(String::from("booting\r\n")));
    let proxy = crate::proxy::Proxy::start(
        emulator.port,
        crate::proxy::Options {
            console_output: Some(console_text.clone()),
            ..Default::default()
        },
    );
    let front = format!("http://127.0.0.1:{}", proxy.port);
    let p = Project::new(&emulator.endpoint());
    p.write(
        "stack.yaml",
        &format!(
            "{}ssh_key_file: ~/.ssh/my key.pem\n",
            bare_stack_yaml("pin", REGION).replace("instance: { enabled: false }\n", "")
        ),
    );
    p.run_ok(&["apply", "--auto-approve"], 0);
    let outputs = p.run_ok(&["output", "--json"], 0);
    let outputs: serde_json::Value = serde_json::from_str(&outputs.stdout).unwrap();
    let (dns, ip) = (
        outputs["instance_dns"].as_str().unwrap().to_string(),
        outputs["instance_ip"].as_str().unwrap().to_string(),
    );

    // ssh-keyscan played by a script: it prints the keys the "server"
    // offers and notes how it was called.
    let keys = tempfile::tempdir().unwrap();
    let (ed25519, ed25519_listed) = host_key(keys.path(), "a", "ed25519");
    let (ecdsa, _) = host_key(keys.path(), "b", "ecdsa");
    let (impostor, _) = host_key(keys.path(), "c", "ed25519");
    let offered = keys.path().join("offered");
    let called = keys.path().join("called");
    let bin = keys.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("ssh-keyscan"),
        format!(
            "#!/bin/sh\necho \"$@\" >'{}'\necho '# {ip}:22 SSH-2.0-OpenSSH_9.9'\nsed 's/^/{ip} /' '{}'\n",
            called.display(),
            offered.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("ssh-keyscan"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ssh_config = |args: &[&str]| {
        let out = p
            .command(&[&["ssh-config"], args].concat())
            .env("AWS_ENDPOINT_URL", &front)
            .env("PATH", &path)
            .output()
            .unwrap();
        crate::common::Output::from(out)
    };
    let home = p.dir.path();
    let entry = home.join(".ssh/ihp-infra/pin.config");
    let known_hosts = home.join(".ssh/ihp-infra/pin.known_hosts");

    // Before the console shows the fingerprints: the entry, no trust.
    std::fs::write(&offered, format!("{ed25519}\n")).unwrap();
    let out = ssh_config(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("not on its console yet"), "{out:?}");
    assert!(!known_hosts.exists());
    let text = std::fs::read_to_string(&entry).unwrap();
    for line in [
        "Host production\n",
        &format!("    HostName {dns}\n"),
        "    User root\n",
        "    IdentityFile \"~/.ssh/my key.pem\"\n",
        "    HostKeyAlias ihp-infra-pin\n",
        "    UserKnownHostsFile ~/.ssh/ihp-infra/pin.known_hosts\n",
        "    StrictHostKeyChecking yes\n",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }

    // The console vouches for the ed25519 key: only that one is kept.
    *console_text.lock().unwrap() = console(&[&ed25519_listed]);
    std::fs::write(&offered, format!("{ed25519}\n{ecdsa}\n")).unwrap();
    let out = ssh_config(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("pinned ssh-ed25519 SHA256:"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        format!("ihp-infra-pin {ed25519}\n")
    );
    assert_eq!(
        std::fs::read_to_string(&called).unwrap().trim(),
        format!("-T 10 -p 22 {ip}")
    );

    // Another key answers in the server's name: refused, nothing changes.
    std::fs::write(&offered, format!("{impostor}\n")).unwrap();
    let out = ssh_config(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("host key has fingerprint")
            && out.stderr.contains("nothing was trusted"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        format!("ihp-infra-pin {ed25519}\n")
    );

    // --install: one Include line at the top of ~/.ssh/config, once.
    std::fs::write(&offered, format!("{ed25519}\n")).unwrap();
    std::fs::write(home.join(".ssh/config"), "Host other\n    User me\n").unwrap();
    let out = ssh_config(&["--install"]);
    assert_eq!(out.code, 1, "asks, and stdin is no terminal: {out:?}");
    assert!(out.stderr.contains("pass --auto-approve"), "{out:?}");
    for _ in 0..2 {
        let out = ssh_config(&["--install", "--auto-approve"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(
        std::fs::read_to_string(home.join(".ssh/config")).unwrap(),
        "Include ~/.ssh/ihp-infra/*.config\nHost other\n    User me\n"
    );
    // ssh itself reads the entry as meant.
    if let Some(ssh) = tool("ssh", "IHP_INFRA_SSH") {
        let resolved = Command::new(ssh)
            .args(["-G", "-F"])
            .arg(home.join(".ssh/config"))
            .arg("production")
            .env("HOME", home)
            .output()
            .unwrap();
        let resolved = String::from_utf8_lossy(&resolved.stdout).to_string();
        for line in [
            format!("hostname {dns}\n"),
            "user root\n".to_string(),
            "stricthostkeychecking true\n".to_string(),
            "hostkeyalias ihp-infra-pin\n".to_string(),
        ] {
            assert!(resolved.contains(&line), "{line:?} in {resolved}");
        }
    }
    p.run_ok(&["destroy", "--auto-approve"], 0);
}
