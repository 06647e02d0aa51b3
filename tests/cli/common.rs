//! Test harness: an AWS emulator per test (a moto server of its own, or an
//! account of its own in one LocalStack), a temp dir with a stack file, and
//! the real `ihp-infra` binary run against them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
#[cfg(target_os = "linux")]
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use base64::Engine;

pub const PASSWORD: &str = "Sup3r-s3cret-pw!";
pub const KEY_NAME: &str = "test-key";

/// The emulator the tests run against, chosen by `IHP_INFRA_TEST_EMULATOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A moto server of our own per test (the default).
    Moto,
    /// One LocalStack for all tests, at `IHP_INFRA_LOCALSTACK_URL`
    /// (default http://localhost:4566), an account of its own per test.
    LocalStack,
}

pub fn kind() -> Kind {
    match std::env::var("IHP_INFRA_TEST_EMULATOR").as_deref() {
        Err(_) | Ok("") | Ok("moto") => Kind::Moto,
        Ok("localstack") => Kind::LocalStack,
        Ok(other) => panic!("IHP_INFRA_TEST_EMULATOR={other}: expected moto or localstack"),
    }
}

/// What a test needs of the emulator beyond EC2, S3, IAM, Logs and STS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// RDS: every plan and apply of a stack with a database.
    Rds,
    /// A server launched with an instance profile (every stack's server).
    InstanceProfile,
    /// The Resource Groups Tagging API finding S3 buckets by tag (how a
    /// bucket the stack file no longer names is found).
    BucketsByTag,
    /// Accounts kept apart as on AWS: another account's bucket answers 403
    /// (moto makes a second account by `x-moto-account-id`; LocalStack lets
    /// every account read every bucket).
    IsolatedAccounts,
    /// The SES v2 API (mail's domain identity).
    SesV2,
}

/// What a stack with every part needs.
pub const FULL_STACK: &[Needs] = &[Needs::Rds, Needs::InstanceProfile];

impl Needs {
    /// Why the emulator can't serve it, if it can't.
    fn missing_on(self, kind: Kind) -> Option<&'static str> {
        match (kind, self) {
            (Kind::Moto, _) => None,
            // The README has the details of each.
            (Kind::LocalStack, Needs::Rds) => Some("LocalStack community has no RDS"),
            (Kind::LocalStack, Needs::InstanceProfile) => {
                Some("its EC2 launches no server with an instance profile")
            }
            (Kind::LocalStack, Needs::BucketsByTag) => {
                Some("its tagging API finds no S3 buckets, so no renamed bucket")
            }
            (Kind::LocalStack, Needs::IsolatedAccounts) => {
                Some("every account can read every bucket there, so none is another account's")
            }
            (Kind::LocalStack, Needs::SesV2) => Some("LocalStack community has no SES v2 API"),
        }
    }
}

/// An AWS emulator for one test: a moto server of its own, or an account
/// of its own in a shared LocalStack, reached through a proxy that records
/// the calls. Stopped (emulator) when dropped.
pub struct Emulator {
    /// What ihp-infra and the tests' clients talk to.
    pub port: u16,
    backend: Backend,
}

enum Backend {
    Moto {
        child: Child,
        recording: PathBuf,
        _dir: tempfile::TempDir,
    },
    LocalStack {
        front: crate::proxy::Proxy,
        account: String,
    },
}

/// moto's server with the fixes of `localstack/moto_as_aws.py` (where its
/// answers differ from AWS's), from the venv `localstack/moto.sh` installs.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("IHP_INFRA_MOTO") {
        return PathBuf::from(path);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/localstack/moto-server"
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the moto server `child` answers on `port` (within 30 s).
fn moto_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(s, "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut response = String::new();
            let _ = s.read_to_string(&mut response);
            if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A 12-digit account id no other test of this run, or of another run
/// against the same LocalStack (even one started in the same second), has
/// used: a random base per test process, then one per test.
fn fresh_account() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        // RandomState is seeded from the OS's randomness per process.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        (random % 100_000_000) * 1_000
    });
    format!(
        "{:012}",
        100_000_000_000 + base + NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

impl Emulator {
    /// The emulator for a test that needs `needs`; None (after saying why on
    /// the terminal) when the chosen one can't serve it: the test is skipped.
    pub fn start_for(needs: &[Needs]) -> Option<Emulator> {
        let kind = kind();
        let why: Vec<&str> = needs.iter().filter_map(|n| n.missing_on(kind)).collect();
        if !why.is_empty() {
            // Straight to the terminal: libtest captures only print macros.
            let test = std::thread::current()
                .name()
                .unwrap_or("a test")
                .to_string();
            let line = format!("skipped on {kind:?}: {test}: {}\n", why.join("; "));
            let _ = std::io::stderr().write_all(line.as_bytes());
            // And to the list a test run sums up (scripts/test), if asked.
            if let Some(path) = std::env::var_os("IHP_INFRA_TEST_SKIPS") {
                let list = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path);
                let _ = list.and_then(|mut f| f.write_all(line.as_bytes()));
            }
            return None;
        }
        Some(match kind {
            Kind::Moto => Emulator::moto(),
            Kind::LocalStack => Emulator::localstack(),
        })
    }

    /// The emulator for a test that works on every emulator.
    pub fn start() -> Emulator {
        Emulator::start_for(&[]).expect("needs nothing")
    }

    /// The widest stack this emulator serves, for tests whose point does not
    /// depend on which parts a stack has: every part on moto; on LocalStack
    /// community without server and database.
    pub fn stack_yaml(&self, prefix: &str, region: &str) -> String {
        if self.serves_whole_stack() {
            stack_yaml(prefix, region)
        } else {
            bare_stack_yaml(prefix, region)
        }
    }

    /// How many resources [`Emulator::stack_yaml`] makes.
    pub fn stack_size(&self) -> usize {
        if self.serves_whole_stack() { 24 } else { 18 }
    }

    /// Whether [`Emulator::stack_yaml`] is the whole stack.
    pub fn serves_whole_stack(&self) -> bool {
        FULL_STACK.iter().all(|need| self.has(*need))
    }

    /// The name of a snapshot of [`Emulator::stack_yaml`]'s output: each
    /// stack has its own.
    pub fn snapshot(&self, name: &str) -> String {
        if self.serves_whole_stack() {
            name.to_string()
        } else {
            format!("{name}_without_server_and_database")
        }
    }

    /// A project with [`Emulator::stack_yaml`] as its stack file.
    pub fn project(&self, prefix: &str, region: &str) -> Project {
        let p = Project::new(&self.endpoint());
        p.write("stack.yaml", &self.stack_yaml(prefix, region));
        p
    }

    /// The AWS account the test's calls go to (in ARNs).
    pub fn account(&self) -> &str {
        match &self.backend {
            // moto's default account.
            Backend::Moto { .. } => "123456789012",
            Backend::LocalStack { account, .. } => account,
        }
    }

    /// Whether this emulator serves `need`.
    pub fn has(&self, need: Needs) -> bool {
        need.missing_on(self.kind()).is_none()
    }

    pub fn kind(&self) -> Kind {
        match self.backend {
            Backend::Moto { .. } => Kind::Moto,
            Backend::LocalStack { .. } => Kind::LocalStack,
        }
    }

    fn localstack() -> Emulator {
        let url = std::env::var("IHP_INFRA_LOCALSTACK_URL")
            .unwrap_or_else(|_| "http://localhost:4566".to_string());
        let (host, port) = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|authority| authority.rsplit_once(':'))
            .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
            .unwrap_or_else(|| panic!("IHP_INFRA_LOCALSTACK_URL={url}: expected http://HOST:PORT"));
        let mut health = String::new();
        if let Ok(mut s) = TcpStream::connect((host.as_str(), port)) {
            let _ = write!(
                s,
                "GET /_localstack/health HTTP/1.0\r\nHost: {host}\r\n\r\n"
            );
            let _ = s.read_to_string(&mut health);
        }
        assert!(
            health.contains(" 200 "),
            "no LocalStack at {url}: start one (`./localstack/localstack.sh start`, or its Docker image) or set IHP_INFRA_LOCALSTACK_URL"
        );
        let account = fresh_account();
        let front = crate::proxy::Proxy::start(
            port,
            crate::proxy::Options {
                account: Some(account.clone()),
                upstream_host: Some(host),
                ..Default::default()
            },
        );
        Emulator {
            port: front.port,
            backend: Backend::LocalStack { front, account },
        }
    }

    fn moto() -> Emulator {
        let server = moto_server();
        assert!(
            server.exists(),
            "moto is not installed at {}: run `./localstack/moto.sh install` (the README's test command does)",
            server.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("requests.jsonl");
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        for _attempt in 0..3 {
            let port = free_port();
            let mut command = Command::new(&server);
            // Linux: if this test process dies (even by kill -9), moto dies
            // with it. Elsewhere (macOS has no prctl) the server is stopped
            // when its handle drops, as on every normal end of a test.
            // SAFETY: prctl is async-signal-safe and touches only the child.
            #[cfg(target_os = "linux")]
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_ENABLE_RECORDING", "true")
                .env(
                    "MOTO_AMIS_PATH",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/localstack/nixos-amis.json"),
                )
                .env("MOTO_RECORDER_FILEPATH", &recording)
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .expect("failed to start moto");
            let mut child = child;
            if moto_ready(&mut child, port) {
                return Emulator {
                    port,
                    backend: Backend::Moto {
                        child,
                        recording,
                        _dir: dir,
                    },
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto did not start; see its log");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The API actions the emulator has received so far, in order: the
    /// action of query (EC2, RDS, IAM, STS) and JSON (Logs) calls, and
    /// "S3 <method> <path>" for S3's REST calls; "(lock)" marks the calls on
    /// the stack's lock.
    pub fn actions(&self) -> Vec<String> {
        let recording = match &self.backend {
            Backend::Moto { recording, .. } => recording,
            Backend::LocalStack { front, .. } => return front.received(),
        };
        let text = std::fs::read_to_string(recording).unwrap_or_default();
        // A stream of JSON entries: moto's recorder sometimes writes two
        // on one line, so lines are no unit.
        serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let body = entry["body"].as_str().unwrap_or("");
                let body = if entry["body_encoded"].as_bool() == Some(true) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .ok()?;
                    String::from_utf8(bytes).unwrap_or_default()
                } else {
                    body.to_string()
                };
                if let Some(action) = body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
                    return Some(action.to_string());
                }
                let target = entry["headers"].as_object().and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Target"))
                        .and_then(|(_, v)| v.as_str())
                });
                if let Some(target) = target {
                    let action = target.rsplit('.').next().unwrap_or_default();
                    // The stack's lock is a log group of its own.
                    if body.contains("/ihp-infra/locks/") {
                        return Some(format!("{action} (lock)"));
                    }
                    return Some(action.to_string());
                }
                let url = entry["url"].as_str().unwrap_or("");
                let path = url.splitn(4, '/').nth(3).unwrap_or("");
                let path = path.split('?').next().unwrap_or("");
                Some(format!(
                    "S3 {} /{path}",
                    entry["method"].as_str().unwrap_or("")
                ))
            })
            .collect()
    }

    /// The requests ihp-infra itself sent (its User-Agent says
    /// `app/ihp-infra`), as recorded: (headers, body).
    fn sent_by_ihp_infra(&self) -> Vec<(serde_json::Value, String)> {
        let text = match &self.backend {
            Backend::Moto { recording, .. } => {
                std::fs::read_to_string(recording).unwrap_or_default()
            }
            Backend::LocalStack { front, .. } => front.recording(),
        };
        // moto may write two entries to a line (see check_requests.py).
        serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .map_while(Result::ok)
            .filter(|entry| {
                entry["headers"].as_object().is_some_and(|h| {
                    h.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case("user-agent")
                            && v.as_str().is_some_and(|v| v.contains("app/ihp-infra"))
                    })
                })
            })
            .map(|entry| {
                let body = entry["body"].as_str().unwrap_or("");
                let body = if entry["body_encoded"].as_bool() == Some(true) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    body.to_string()
                };
                (entry["headers"].clone(), body)
            })
            .collect()
    }

    /// The parameters of every query-protocol call (EC2, RDS, IAM) with
    /// `action` that ihp-infra sent, form-decoded.
    pub fn sent(&self, action: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        self.sent_by_ihp_infra()
            .into_iter()
            .map(|(_, body)| {
                body.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (decode(k), decode(v)))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .filter(|params| params.get("Action").map(String::as_str) == Some(action))
            .collect()
    }

    /// The access key ids that signed ihp-infra's calls.
    pub fn signed_by(&self) -> std::collections::BTreeSet<String> {
        self.sent_by_ihp_infra()
            .into_iter()
            .filter_map(|(headers, _)| {
                let auth = headers.as_object()?.iter().find_map(|(k, v)| {
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.as_str())?
                })?;
                // AWS4-HMAC-SHA256 Credential=AKID/20261202/region/service/aws4_request, ...
                let key = auth.split("Credential=").nth(1)?.split('/').next()?;
                Some(key.to_string())
            })
            .collect()
    }

    /// The `ihp-infra:stack` tag of log group `name` in `region`.
    pub async fn log_group_stack(&self, region: &str, name: &str) -> Option<String> {
        let arn = format!("arn:aws:logs:{region}:{}:log-group:{name}", self.account());
        let tags = self
            .logs(region)
            .await
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        tags.tags()?.get("ihp-infra:stack").cloned()
    }

    pub async fn rds(&self, region: &str) -> aws_sdk_rds::Client {
        let config = aws_sdk_rds::Config::builder()
            .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
            .region(aws_sdk_rds::config::Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_rds::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_rds::Client::from_conf(config)
    }

    pub async fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }

    pub async fn sesv2(&self, region: &str) -> aws_sdk_sesv2::Client {
        let config = aws_sdk_sesv2::Config::builder()
            .behavior_version(aws_sdk_sesv2::config::BehaviorVersion::latest())
            .region(aws_sdk_sesv2::config::Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_sesv2::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_sesv2::Client::from_conf(config)
    }

    /// Route53 is global: its endpoint is the emulator's whatever the region.
    pub async fn route53(&self) -> aws_sdk_route53::Client {
        let config = aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_route53::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_route53::Client::from_conf(config)
    }

    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn logs(&self, region: &str) -> aws_sdk_cloudwatchlogs::Client {
        let config = aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatchlogs::config::Region::new(
                region.to_string(),
            ))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_cloudwatchlogs::Client::from_conf(config)
    }

    pub async fn iam(&self) -> aws_sdk_iam::Client {
        let config = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_iam::Client::from_conf(config)
    }

    /// The EC2 client for `region`, with the stacks' key pair made there.
    pub async fn ec2_with_key(&self, region: &str) -> aws_sdk_ec2::Client {
        let ec2 = self.ec2(region).await;
        ec2.create_key_pair()
            .key_name(KEY_NAME)
            .send()
            .await
            .unwrap();
        ec2
    }

    pub async fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }
}

impl Emulator {
    /// The requests ihp-infra sent here so far, checked against what AWS
    /// accepts (done for every test when its emulator stops).
    pub fn check_requests(&self) -> crate::requests::Checked {
        match &self.backend {
            Backend::Moto { recording, .. } => crate::requests::check(recording),
            Backend::LocalStack { front, .. } => {
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), front.recording()).unwrap();
                crate::requests::check(file.path())
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Backend::Moto { child, .. } = &mut self.backend {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A test that failed already has its own story to tell.
        if std::thread::panicking() {
            return;
        }
        let violations = self.check_requests().violations;
        assert!(
            violations.is_empty(),
            "ihp-infra sent {} request(s) real AWS would reject (tests/cli/check_requests.py):\n  {}",
            violations.len(),
            violations.join("\n  ")
        );
    }
}

/// Whether an action changes a resource (everything but reads, and but
/// taking and releasing the stack's lock).
pub fn is_write(action: &str) -> bool {
    if action.ends_with(" (lock)") {
        return false;
    }
    if let Some(call) = action.strip_prefix("S3 ") {
        return !(call.starts_with("GET ") || call.starts_with("HEAD "));
    }
    !["Describe", "Get", "List"]
        .iter()
        .any(|p| action.starts_with(p))
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A working directory with a stack file, and the environment to run in.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

pub fn stack_yaml(prefix: &str, region: &str) -> String {
    format!(
        "prefix: {prefix}\nregion: {region}\naz_1: {region}a\naz_2: {region}b\nkey_name: {KEY_NAME}\ndb_password: \"{PASSWORD}\"\n"
    )
}

/// A stack without server and database: the network, the bucket, the log
/// group and IAM, which every emulator serves (LocalStack community has no
/// RDS and launches no server with an instance profile).
pub fn bare_stack_yaml(prefix: &str, region: &str) -> String {
    format!(
        "prefix: {prefix}\nregion: {region}\naz_1: {region}a\naz_2: {region}b\nkey_name: {KEY_NAME}\ninstance: {{ enabled: false }}\ndatabase: {{ enabled: false }}\n"
    )
}

impl Project {
    pub fn new(endpoint: &str) -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
            endpoint: endpoint.to_string(),
        }
    }

    pub fn with_stack(endpoint: &str, prefix: &str, region: &str) -> Project {
        let p = Project::new(endpoint);
        p.write("stack.yaml", &stack_yaml(prefix, region));
        p
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ihp-infra"));
        // A clean environment: no profile or credentials of the machine leak in.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("failed to run ihp-infra")
            .into()
    }

    /// Runs against `endpoint` (a test proxy in front of the emulator).
    pub fn run_at(&self, endpoint: &str, args: &[&str]) -> Output {
        self.command(args)
            .env("AWS_ENDPOINT_URL", endpoint)
            .output()
            .expect("failed to run ihp-infra")
            .into()
    }

    /// Runs and insists on an exit code, showing all output when it differs.
    pub fn run_ok(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(out.code, code, "ihp-infra {args:?}: {out:?}");
        assert!(
            !out.all().contains(PASSWORD),
            "the password was printed: {out:?}"
        );
        out
    }
}

/// insta filters for AWS ids, which change every run.
/// insta filters for AWS ids, which change every run, and for the account
/// in ARNs (LocalStack gives every test an account of its own).
pub fn id_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"\b(vpc|subnet|igw|rtb|sg|i|eipalloc)-[0-9a-f]{8,}",
            "[$1-id]",
        ),
        (
            r"(arn:aws:[a-z0-9-]+:[a-z0-9-]*:)[0-9]{12}:",
            "$1[account]:",
        ),
        // Access key ids (random, like the rest; LocalStack starts them LKIA).
        (r"\b[AL]KIA[A-Z0-9]{16}\b", "[access-key-id]"),
    ]
}

/// Terraform from the machine (and its provider mirror), or None after
/// saying why the test skips.
pub fn terraform() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("terraform"))
            .find(|p| p.is_file())
    });
    let mirror = std::path::PathBuf::from(
        std::env::var("TF_PLUGIN_MIRROR").unwrap_or_else(|_| "/opt/tf-plugins".into()),
    );
    match found {
        Some(t) if mirror.join("registry.terraform.io/hashicorp/aws").is_dir() => Some((t, mirror)),
        // Straight to the terminal: libtest captures only print macros.
        Some(_) => {
            let _ = std::io::stderr().write_all(
                format!(
                    "skipped: no Terraform AWS provider mirror at {} (set TF_PLUGIN_MIRROR)\n",
                    mirror.display()
                )
                .as_bytes(),
            );
            None
        }
        None => {
            let _ = std::io::stderr().write_all(b"skipped: terraform is not installed\n");
            None
        }
    }
}
