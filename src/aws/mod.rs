//! The AWS side: configuration, identity, and one module per service.
//!
//! Configuration comes from the SDK's standard chain (environment,
//! profiles, SSO, AWS_ENDPOINT_URL), so LocalStack and moto work unchanged.

pub mod calls;
pub mod ec2;
pub mod iam;
pub mod lock;
pub mod logs;
pub mod overlay;
pub mod rds;
pub mod route53;
pub mod s3;
pub mod service;
pub mod ses;
pub mod ssm;
pub mod tagging;

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;

pub use service::{Created, NewSecret, Service, Wanted, is_throttle, maybe_done};

use crate::desired::{self, Facts};
use crate::executor::{Phase, Step};
use crate::model::{Address, Attrs, Kind, Observed, Value};
use crate::password;
use crate::plan::{AttrChange, Change, Plan};
use crate::policies::Arns;
use crate::retry::Budgets;
use crate::stack::Stack;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ec2(#[from] ec2::Error),
    #[error(transparent)]
    Rds(#[from] rds::Error),
    #[error(transparent)]
    S3(#[from] s3::Error),
    #[error(transparent)]
    Logs(#[from] logs::Error),
    #[error(transparent)]
    Iam(#[from] iam::Error),
    #[error(transparent)]
    Ssm(#[from] ssm::Error),
    #[error(transparent)]
    Ses(#[from] ses::Error),
    /// Boxed: its errors name a record, a zone and two stacks.
    #[error(transparent)]
    Route53(Box<route53::Error>),
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(
        "failed to find out which AWS account to use: {}\n  (check your credentials: --profile or AWS_PROFILE (~/.aws/config), \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or `aws sso login`, and AWS_ENDPOINT_URL if you use an emulator)",
        service::describe(source.as_ref())
    )]
    Identity {
        #[source]
        source: Box<aws_sdk_sts::Error>,
    },
    #[error("internal error: no service serves {kind} (or two do)")]
    Unrouted { kind: Kind },
    #[error("internal error: the plan gives {address} no {attribute}")]
    MissingAttribute {
        address: Address,
        attribute: &'static str,
    },
}

impl From<route53::Error> for Error {
    fn from(e: route53::Error) -> Self {
        Error::Route53(Box::new(e))
    }
}

/// What to do next after an error AWS answered with this code, when that
/// is knowable from the code alone.
pub fn hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            "the credentials in use lack a permission this needs: check the IAM policy of your user or role (`aws sts get-caller-identity` shows which one is used)"
        }
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException" => {
            "AWS does not accept these credentials: check AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            "the credentials have expired: log in again (e.g. `aws sso login`) and rerun"
        }
        "OptInRequired" => {
            "the account is not opted in to this region or service: enable it in the AWS console"
        }
        "InstanceLimitExceeded"
        | "VcpuLimitExceeded"
        | "InstanceQuotaExceeded"
        | "DBInstanceQuotaExceeded"
        | "StorageQuotaExceeded"
        | "VpcLimitExceeded"
        | "AddressLimitExceeded"
        | "LimitExceeded"
        | "LimitExceededException"
        | "TooManyBuckets" => {
            "an AWS quota is reached: delete unused resources or ask for a higher quota (Service Quotas console), then rerun"
        }
        "InsufficientInstanceCapacity" | "InsufficientDBInstanceCapacity" | "Unsupported" => {
            "AWS has no capacity for this type in this zone right now: pick another instance type or az_1, or retry later"
        }
        "BucketAlreadyExists" => {
            "S3 bucket names are global and another account owns this one: set storage.bucket to another name"
        }
        _ => return None,
    })
}

/// Hints for codes only an emulator's EC2 answers.
fn ec2_hint(code: &str) -> Option<&'static str> {
    // NoSuchEntity is IAM's code: AWS's EC2 never answers it. LocalStack
    // community's EC2 (moto's) does for every instance profile, because it
    // can't see LocalStack's own IAM.
    (code == "NoSuchEntity").then_some(
        "EC2 can't see the server's instance profile: LocalStack's community edition launches no server with one; \
         leave the server out there (instance: { enabled: false }) or use LocalStack Pro, moto or AWS",
    )
}

impl Error {
    /// What to do next, when the error's code says.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Rds(e) => e.hint(),
            Error::Ses(e) => e.hint(),
            Error::Ec2(e) => e.code().and_then(ec2_hint),
            _ => None,
        }
        .or_else(|| self.code().and_then(hint))
    }

    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Ec2(e) => e.code(),
            Error::Rds(e) => e.code(),
            Error::S3(e) => e.code(),
            Error::Logs(e) => e.code(),
            Error::Iam(e) => e.code(),
            Error::Ssm(e) => e.code(),
            Error::Route53(e) => e.code(),
            Error::Ses(e) => e.code(),
            Error::Lock(e) => e.code(),
            Error::Identity { source } => source.code(),
            Error::Unrouted { .. } | Error::MissingAttribute { .. } => None,
        }
    }
}

/// Clients for one stack in one region, and the route from each kind to
/// the service that serves it.
pub struct Aws {
    /// How many calls each stage and step made, for the critical path.
    pub depth: Depth,
    pub arns: Arns,
    /// The stack's lock (see `lock`).
    pub locks: lock::Locks,
    /// EC2 and RDS also answer what planning and outputs need to know.
    ec2: Arc<ec2::Ec2>,
    addresses: Arc<ec2::address::Addresses>,
    rds: Arc<rds::Rds>,
    /// The hand-over's parameters, and the access key secret they store.
    pub ssm: Arc<ssm::Ssm>,
    /// Tags `adopt` would add, seen by observe before they are written.
    pub overlay: Arc<overlay::Overlay>,
    s3: Arc<s3::S3>,
    logs: Arc<logs::Logs>,
    ses: Arc<ses::Ses>,
    services: Vec<Arc<dyn Service>>,
    routes: HashMap<Kind, Arc<dyn Service>>,
}

/// The calls made one after another: per stage of a run (identity,
/// observe, facts, lock, outputs: the most any of its concurrent branches
/// made) and per executed step. With a fixed latency per call, no run can
/// be faster than the critical path these give, times the latency.
#[derive(Debug, Default)]
pub struct Depth {
    stages: std::sync::Mutex<Vec<(&'static str, usize)>>,
    steps: std::sync::Mutex<HashMap<Step, usize>>,
}

impl Depth {
    fn starting_with(stage: &'static str, calls: usize) -> Self {
        let depth = Depth::default();
        depth.stage(stage, Some(calls));
        depth
    }

    /// Records a stage whose calls follow everything before it.
    pub fn stage(&self, name: &'static str, calls: Option<usize>) {
        self.stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, calls.unwrap_or(0)));
    }

    async fn step<T>(
        &self,
        change: &Change,
        phase: Phase,
        f: impl std::future::Future<Output = T>,
    ) -> T {
        let (out, calls) = calls::counted(f).await;
        let step = Step {
            address: change.address.clone(),
            phase,
        };
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(step, calls);
        out
    }

    /// The calls of all stages, one after another.
    pub fn stage_calls(&self) -> usize {
        self.stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// The calls a step made (none when it didn't run).
    pub fn step_calls(&self, step: &Step) -> usize {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(step)
            .copied()
            .unwrap_or(0)
    }
}

/// How to reach AWS beyond the standard chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `--profile`: this profile's credentials and settings, even when
    /// AWS_ACCESS_KEY_ID is set.
    pub profile: Option<String>,
}

pub use crate::outputs::Outputs;

/// Each kind to the one service that serves it; every kind must have one.
fn routes(services: &[Arc<dyn Service>]) -> Result<HashMap<Kind, Arc<dyn Service>>, Error> {
    let mut routes = HashMap::new();
    for service in services {
        for &kind in service.kinds() {
            if routes.insert(kind, service.clone()).is_some() {
                return Err(Error::Unrouted { kind });
            }
        }
    }
    match Kind::ALL.iter().find(|k| !routes.contains_key(k)) {
        Some(&kind) => Err(Error::Unrouted { kind }),
        None => Ok(routes),
    }
}

/// What planning knows of the hand-over's values and the stack's keys.
struct KeysKnown {
    /// The digest of what each parameter should hold, where known.
    digests: std::collections::BTreeMap<&'static str, String>,
    /// Whether the S3 key's secret is known (or there is no key).
    s3: bool,
    /// Whether the SMTP key's password is stored (or there is no key).
    smtp: bool,
}

/// How long `output` waits for DNS to answer one name.
const DNS_LOOKUP: std::time::Duration = std::time::Duration::from_secs(3);

/// The domain's records, each with what DNS answers for it now (looked up
/// with the system's resolver, as the user's browser would).
async fn domain_output(
    domain: &crate::stack::DomainSpec,
    ip: Option<String>,
) -> crate::outputs::Domain {
    let records = domain.names().map(|name| {
        let ip = ip.clone();
        let name = name.to_string();
        async move {
            let lookup = {
                let name = name.clone();
                tokio::task::spawn_blocking(move || {
                    use std::net::ToSocketAddrs;
                    (name.as_str(), 443)
                        .to_socket_addrs()
                        .map(|addrs| {
                            // IPv6 too: Let's Encrypt tries an AAAA record
                            // first, so one elsewhere fails the certificate.
                            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                            ips.sort();
                            ips.dedup();
                            ips
                        })
                        .unwrap_or_default()
                })
            };
            let resolves_to = tokio::time::timeout(DNS_LOOKUP, lookup)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            crate::outputs::DomainRecord {
                name,
                kind: "A",
                value: ip,
                resolves_to,
            }
        }
    });
    crate::outputs::Domain {
        name: domain.name.clone(),
        zone: domain.zone.clone(),
        records: futures::future::join_all(records).await,
    }
}

/// Whether the user chose how many attempts a call gets: `AWS_MAX_ATTEMPTS`,
/// or `max_attempts` in the profile in use (the SDK reads both; they win
/// over ihp-infra's default).
async fn max_attempts_set(profile: Option<&str>) -> bool {
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let profiles = aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &aws_types::os_shim_internal::Env::real(),
        &aws_runtime::env_config::file::EnvConfigFiles::default(),
        profile.map(|p| std::borrow::Cow::Owned(p.to_string())),
    )
    .await;
    // An unreadable config file is the credentials chain's to report.
    profiles.is_ok_and(|p| p.get("max_attempts").is_some())
}

impl Aws {
    /// Loads the SDK configuration for the stack's region and checks the
    /// credentials with one STS call, so a missing profile fails first.
    pub async fn connect(stack: &Stack, settings: &Settings) -> Result<Self, Error> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(stack.region.clone()))
            // In every call's User-Agent (`app/ihp-infra`): CloudTrail shows
            // which tool made a change, and the tests tell our calls apart.
            .app_name(aws_config::AppName::new("ihp-infra").expect("a valid app name"));
        // ihp-infra's budget of attempts, unless the user set one.
        if !max_attempts_set(settings.profile.as_deref()).await {
            loader = loader.retry_config(crate::retry::sdk_retry_config());
        }
        if let Some(profile) = &settings.profile {
            // As with the AWS CLI, an explicit --profile wins over credentials
            // in the environment (the default chain would try those first).
            loader = loader.profile_name(profile).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .profile_name(profile)
                    .build(),
            );
        }
        let config = loader.load().await;
        let sts = aws_sdk_sts::config::Builder::from(&config)
            .interceptor(calls::CallLog)
            .retry_classifier(crate::retry::RefusedIsFinal)
            .build();
        let identity = aws_sdk_sts::Client::from_conf(sts)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| Error::Identity {
                source: Box::new(e.into()),
            })?;
        let arns = Arns {
            // arn:<partition>:sts::<account>:...
            partition: identity
                .arn()
                .unwrap_or_default()
                .split(':')
                .nth(1)
                .unwrap_or("aws")
                .to_string(),
            account: identity.account().unwrap_or_default().to_string(),
            region: stack.region.clone(),
        };
        let mut aws = Aws::with_config(&config, stack, arns)?;
        aws.depth = Depth::starting_with("identity", 1);
        Ok(aws)
    }

    /// The services for `stack`, on clients made from `config`; makes no call.
    fn with_config(
        config: &aws_config::SdkConfig,
        stack: &Stack,
        arns: Arns,
    ) -> Result<Self, Error> {
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style(
                config.endpoint_url(),
                std::env::var_os("AWS_ENDPOINT_URL_S3").is_some(),
            ))
            .interceptor(calls::CallLog)
            .build();
        // Every client logs its calls at -v.
        macro_rules! client {
            ($sdk:ident) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(config)
                        .interceptor(calls::CallLog)
                        .build(),
                )
            };
        }
        let prefix = &stack.prefix;
        let tagging = tagging::Tagging::new(client!(aws_sdk_resourcegroupstagging), prefix);
        let logs_client = client!(aws_sdk_cloudwatchlogs);
        let ec2_client = client!(aws_sdk_ec2);
        let overlay = Arc::new(overlay::Overlay::default());
        let addresses = Arc::new(ec2::address::Addresses::new(
            ec2_client.clone(),
            prefix,
            overlay.clone(),
        ));
        let ec2 = Arc::new(ec2::Ec2::new(
            ec2_client.clone(),
            prefix,
            Budgets::default(),
            overlay.clone(),
        ));
        let rds = Arc::new(rds::Rds::new(
            client!(aws_sdk_rds),
            prefix,
            stack.db_password.clone(),
            overlay.clone(),
        ));
        let ssm = Arc::new(ssm::Ssm::new(
            client!(aws_sdk_ssm),
            prefix,
            stack.db_password.clone(),
            desired::database_identifier(stack),
            stack.database.clone().unwrap_or_default().username,
            rds.clone(),
            &stack.region,
        ));
        let s3 = Arc::new(s3::S3::new(
            aws_sdk_s3::Client::from_conf(s3_config),
            tagging.clone(),
            prefix,
            &stack.region,
            overlay.clone(),
        ));
        let logs = Arc::new(logs::Logs::new(
            logs_client.clone(),
            tagging,
            prefix,
            arns.clone(),
            overlay.clone(),
        ));
        let ses = Arc::new(ses::Ses::new(client!(aws_sdk_sesv2), prefix, arns.clone()));
        let services: Vec<Arc<dyn Service>> = vec![
            ssm.clone(),
            ec2.clone(),
            addresses.clone(),
            rds.clone(),
            s3.clone(),
            logs.clone(),
            Arc::new(iam::Iam::new(client!(aws_sdk_iam), prefix, arns.clone())),
            ses.clone(),
            Arc::new(route53::Route53::new(
                client!(aws_sdk_route53),
                addresses.clone(),
                ses.clone(),
                prefix,
                stack.domain.as_ref().and_then(|d| d.zone.clone()),
            )),
        ];
        Ok(Aws {
            depth: Depth::default(),
            locks: lock::Locks::new(
                logs_client,
                prefix,
                arns.log_group(&lock::Locks::group_name(prefix)),
            ),
            arns,
            routes: routes(&services)?,
            services,
            ec2,
            addresses,
            rds,
            ssm,
            overlay,
            s3,
            logs,
            ses,
        })
    }

    /// The EC2 service, for what `adopt` finds and tags.
    pub fn ec2(&self) -> &ec2::Ec2 {
        &self.ec2
    }

    /// The RDS service, for what `adopt` finds and tags.
    pub fn rds(&self) -> &rds::Rds {
        &self.rds
    }

    /// The S3 service, for the bucket `adopt` may take over.
    pub fn s3(&self) -> &s3::S3 {
        &self.s3
    }

    /// The CloudWatch Logs service, for the log group `adopt` may take over.
    pub fn logs(&self) -> &logs::Logs {
        &self.logs
    }

    fn service(&self, kind: Kind) -> Result<&dyn Service, Error> {
        self.routes
            .get(&kind)
            .map(|s| s.as_ref())
            .ok_or(Error::Unrouted { kind })
    }

    /// Every live resource of the stack; `wanted` names what the stack may
    /// have (see [`Wanted`]).
    pub async fn observe(&self, wanted: &Wanted<'_>) -> Result<Vec<Observed>, Error> {
        let results = futures::future::join_all(
            self.services
                .iter()
                .map(|s| calls::counted(s.observe(wanted))),
        )
        .await;
        self.depth
            .stage("observe", results.iter().map(|(_, n)| *n).max());
        let mut observed = Vec::new();
        for (result, _) in results {
            observed.extend(result?);
        }
        Ok(observed)
    }

    /// What only AWS can tell about a plan before anything changes (a
    /// bucket to delete that still holds files): every service checks.
    pub async fn check(&self, plan: &Plan) -> Result<(), Error> {
        futures::future::try_join_all(self.services.iter().map(|s| s.check(plan))).await?;
        Ok(())
    }

    /// What planning must learn from AWS: the key pair exists, which image a
    /// new server would use, whether the password changed, and what the
    /// hand-over's parameters should hold.
    pub async fn facts(&self, stack: &Stack, observed: &[Observed]) -> Result<Facts, Error> {
        let server = async {
            let Some(server) = &stack.instance else {
                // No server: neither its key pair nor its image matter.
                return Ok((String::new(), None));
            };
            let (key, image) = tokio::join!(
                self.ec2.check_key_pair(&stack.key_name, &stack.region),
                self.ec2
                    .choose_image(&server.image, &server.instance_type, &stack.region),
            );
            key?;
            Ok::<_, Error>(image?)
        };
        let ((server, a), (parameters, b)) = tokio::join!(
            calls::counted(server),
            calls::counted(self.parameter_digests(stack, observed)),
        );
        self.depth.stage("facts", Some(a.max(b)));
        let (image_choice, image) = server?;
        let keys = parameters?;
        Ok(Facts {
            image,
            image_choice,
            password_hash: self.password_hash(stack, observed).await,
            arns: self.arns.clone(),
            parameters: keys.digests,
            key_secret_known: keys.s3,
            smtp_secret_known: keys.smtp,
            dkim_tokens: observed
                .iter()
                .find(|o| o.address == desired::email_identity())
                .and_then(|o| match o.attrs.get("dkim_tokens") {
                    Some(Value::Text(t)) => {
                        Some(t.split_whitespace().map(str::to_string).collect())
                    }
                    _ => None,
                })
                .unwrap_or_default(),
        })
    }

    /// The digests of what each hand-over parameter should hold, where that
    /// is known before apply, and whether the live access key's secret is
    /// known (stored in its parameter, or in the local key file of a stack
    /// made before the hand-over). A known secret is kept for the writes.
    async fn parameter_digests(
        &self,
        stack: &Stack,
        observed: &[Observed],
    ) -> Result<KeysKnown, Error> {
        use crate::handover::{self, digest};
        let mut digests = std::collections::BTreeMap::new();
        let live_db = observed.iter().any(|o| o.address == desired::database());
        if let Some(db) = stack.database.as_ref().filter(|_| live_db) {
            let identifier = desired::database_identifier(stack);
            if let Some(endpoint) = self.rds.endpoint(&identifier).await? {
                // The stack's user: a new one replaces the database, and
                // the URL follows in the same apply.
                let url = handover::database_url(
                    &db.username,
                    stack.db_password.expose(),
                    &endpoint.address,
                    endpoint.port,
                );
                digests.insert(handover::DATABASE_URL.role, digest(&url));
            }
        }
        let live_keys = |address: Address| -> Vec<&str> {
            observed
                .iter()
                .filter(|o| o.address == address)
                .map(|o| o.id.as_str())
                .collect()
        };
        let s3_keys = live_keys(desired::access_key());
        let stored = match (
            self.ssm.live(handover::KEY_ID),
            self.ssm.live(handover::SECRET_KEY),
        ) {
            (Some(id), Some(secret)) if s3_keys.contains(&id.expose()) => {
                Some((id.expose().to_string(), secret.expose().to_string()))
            }
            _ => None,
        };
        let from_file = || {
            ssm::read_key_file(&crate::db_info::access_key_path(&stack.path))
                .filter(|(id, _)| s3_keys.contains(&id.as_str()))
        };
        let known = stored.or_else(from_file);
        if let Some((id, secret)) = &known {
            self.ssm.key.set(handover::S3_KEY, id, Some(secret));
            digests.insert(handover::KEY_ID.role, digest(id));
            digests.insert(handover::SECRET_KEY.role, digest(secret));
        }
        // The SMTP password can't give its secret back: the SMTP key is
        // known when its id and a password are stored for it.
        let smtp_keys = live_keys(desired::smtp_key());
        let smtp_known = match (
            self.ssm.live(handover::SMTP_USER),
            self.ssm.live(handover::SMTP_PASSWORD),
        ) {
            (Some(id), Some(password)) if smtp_keys.contains(&id.expose()) => {
                self.ssm.key.set(handover::SMTP_KEY, id.expose(), None);
                digests.insert(handover::SMTP_USER.role, digest(id.expose()));
                digests.insert(handover::SMTP_PASSWORD.role, digest(password.expose()));
                true
            }
            _ => false,
        };
        Ok(KeysKnown {
            digests,
            s3: s3_keys.is_empty() || known.is_some(),
            smtp: smtp_keys.is_empty() || smtp_known,
        })
    }

    /// Says on each live access key whether its secret is known (see
    /// [`Facts::key_secret_known`]): one whose secret is lost is replaced.
    /// A second key of a user (a run killed between making a new key and
    /// deleting the old one) gets a role of its own, so the plan deletes
    /// it: the key kept is the one whose secret is known.
    pub fn mark_key_secrets(&self, facts: &Facts, observed: &mut [Observed]) {
        for (address, known_secret) in [
            (desired::access_key(), facts.key_secret_known),
            (desired::smtp_key(), facts.smtp_secret_known),
        ] {
            let known = self.ssm.key.get(&address.role).map(|(id, _)| id);
            let keys: Vec<usize> = (0..observed.len())
                .filter(|&i| observed[i].address == address)
                .collect();
            let keep = keys
                .iter()
                .copied()
                .find(|&i| Some(&observed[i].id) == known.as_ref())
                .or(keys.first().copied());
            for i in keys {
                let key = &mut observed[i];
                if Some(i) != keep {
                    let role = format!("{}-{}", key.address.role, key.id.to_lowercase());
                    key.address = Address::new(Kind::AccessKey, &role);
                }
                key.attrs.insert("secret_known", Value::Bool(known_secret));
            }
        }
    }

    /// The error of a plan that launches a server with no image to start from.
    pub fn no_image(facts: &Facts, region: &str) -> Error {
        ec2::Ec2::no_image(&facts.image_choice, region).into()
    }

    /// The password's salted hash as the database should be tagged: the
    /// live one when the password still matches it, else a new one.
    async fn password_hash(&self, stack: &Stack, observed: &[Observed]) -> String {
        if stack.database.is_none() {
            return String::new();
        }
        let live_hash = observed
            .iter()
            .find(|o| o.address.kind == Kind::Database)
            .and_then(|o| match o.attrs.get("password") {
                Some(Value::Sensitive(h)) => Some(h.clone()),
                _ => None,
            });
        let password = stack.db_password.clone();
        // Argon2 is slow on purpose: keep it off the async threads.
        tokio::task::spawn_blocking(move || match live_hash {
            Some(h) if password::verify(&h, password.expose()) => h,
            _ => password::hash(password.expose()),
        })
        .await
        .unwrap_or_default()
    }

    /// What the server's configuration needs, from the stack and AWS.
    pub async fn outputs(&self, stack: &Stack) -> Result<Outputs, Error> {
        // A part the stack leaves out has no outputs, even while a live one
        // is still on its way out.
        let server = async {
            if stack.instance.is_none() {
                return Ok(None);
            }
            self.server().await
        };
        let database = async {
            match stack.database {
                Some(_) => {
                    self.rds
                        .endpoint(&desired::database_identifier(stack))
                        .await
                }
                None => Ok(None),
            }
        };
        let ((server, a), (database, b)) =
            tokio::join!(calls::counted(server), calls::counted(database));
        self.depth.stage("outputs", Some(a.max(b)));
        let server = server?;
        let key_file = crate::db_info::access_key_path(&stack.path);
        let ip = server.as_ref().and_then(|s| s.ip.clone());
        let domain = match &stack.domain {
            Some(d) => Some(domain_output(d, ip.clone()).await),
            None => None,
        };
        let mail = match stack.mail.as_ref().filter(|m| m.enabled) {
            Some(m) => {
                let state = self.ses.state(&m.from_domain).await?;
                Some(crate::outputs::Mail {
                    from_domain: m.from_domain.clone(),
                    smtp_host: crate::mail::smtp_host(&stack.region),
                    verified: state.verified,
                    dkim_records: state.dkim_records,
                    production_access: state.production_access,
                })
            }
            None => None,
        };
        Ok(Outputs {
            instance_dns: server.as_ref().map(|s| s.dns.clone()),
            instance_ip: server.as_ref().and_then(|s| s.ip.clone()),
            system: server.and_then(|s| s.system),
            key_name: stack.key_name.clone(),
            database: database?.map(|db| crate::outputs::Database {
                endpoint: db.address,
                port: db.port,
                username: db.username,
            }),
            region: stack.region.clone(),
            bucket: stack.storage.bucket.clone(),
            log_group: stack.logs.group.clone(),
            access_key_file: (stack.storage.key_file && key_file.exists())
                .then(|| key_file.display().to_string()),
            no_server: stack.instance.is_none(),
            domain,
            mail,
        })
    }

    /// The running server: its id, DNS name, public address (the Elastic
    /// IP, the address that stays) and system.
    pub async fn server(&self) -> Result<Option<ec2::instance::ServerAddress>, Error> {
        let (server, address) =
            tokio::try_join!(self.ec2.server_address(), self.addresses.public_ip())?;
        Ok(server.map(|s| ec2::instance::ServerAddress {
            ip: address.or(s.ip),
            ..s
        }))
    }

    /// What the server printed to its console (see [`ec2::Ec2::console_output`]).
    pub async fn console_output(&self, id: &str) -> Result<String, Error> {
        Ok(self.ec2.console_output(id).await?)
    }

    /// Creates the resource of `change` through its kind's service.
    pub async fn create(&self, change: &Change, attrs: Attrs) -> Result<Created, Error> {
        let service = self.service(change.address.kind)?;
        self.depth
            .step(change, Phase::Create, service.create(change, &attrs))
            .await
    }

    /// Updates the resource of `change` through its kind's service.
    pub async fn update(
        &self,
        change: &Change,
        id: &str,
        attrs: &[AttrChange],
    ) -> Result<(), Error> {
        let service = self.service(change.address.kind)?;
        self.depth
            .step(change, Phase::Update, service.update(change, id, attrs))
            .await
    }

    /// Deletes the resource of `change` through its kind's service.
    pub async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, Error> {
        let service = self.service(change.address.kind)?;
        self.depth
            .step(change, Phase::Delete, service.delete(change, id))
            .await
    }
}

/// Behind an endpoint override (LocalStack at `localhost:4566`, moto) a
/// bucket name can't be put in front of the host name: address buckets by
/// path there, and by host name on AWS itself.
fn path_style(endpoint_url: Option<&str>, s3_endpoint_set: bool) -> bool {
    endpoint_url.is_some() || s3_endpoint_set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_profile_unseen_by_localstack_ec2_has_a_hint() {
        let h = ec2_hint("NoSuchEntity").unwrap();
        assert!(h.contains("instance: { enabled: false }"), "{h}");
        assert_eq!(ec2_hint("InvalidParameterValue"), None);
    }

    #[test]
    fn codes_that_say_what_to_do_next_have_a_hint() {
        assert!(
            hint("UnauthorizedOperation")
                .unwrap()
                .contains("permission")
        );
        assert!(hint("VcpuLimitExceeded").unwrap().contains("quota"));
        assert!(
            hint("InstanceQuotaExceeded").unwrap().contains("quota"),
            "RDS spells it so"
        );
        assert!(
            hint("BucketAlreadyExists")
                .unwrap()
                .contains("storage.bucket")
        );
        assert_eq!(hint("InvalidParameterValue"), None);
    }

    #[test]
    fn every_kind_has_exactly_one_service() {
        // Clients are made without a call: no endpoint is reached.
        let config = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .build();
        let stack = crate::stack::test_stack("demo");
        let aws = Aws::with_config(&config, &stack, crate::desired::test_facts().arns)
            .expect("every kind is routed");
        for kind in Kind::ALL {
            let service = aws.service(kind).unwrap();
            assert!(service.kinds().contains(&kind), "{kind}");
        }
        let served: usize = aws.services.iter().map(|s| s.kinds().len()).sum();
        assert_eq!(served, Kind::ALL.len(), "no kind is served twice");
    }

    #[test]
    fn a_kind_without_a_service_is_an_error() {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .build();
        let stack = crate::stack::test_stack("demo");
        let mut aws = Aws::with_config(&config, &stack, crate::desired::test_facts().arns).unwrap();
        aws.services
            .retain(|s| !s.kinds().contains(&Kind::LogGroup));
        assert!(matches!(
            routes(&aws.services),
            Err(Error::Unrouted {
                kind: Kind::LogGroup
            })
        ));
        let twice = [aws.services.clone(), aws.services.clone()].concat();
        assert!(matches!(routes(&twice), Err(Error::Unrouted { .. })));
    }

    #[test]
    fn buckets_by_path_only_behind_an_endpoint_override() {
        assert!(!path_style(None, false), "virtual-host style on AWS");
        assert!(path_style(Some("http://localhost:4566"), false));
        assert!(path_style(None, true), "AWS_ENDPOINT_URL_S3 alone");
    }
}
