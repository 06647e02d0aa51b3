//! The AWS side: configuration, identity, and one module per service.
//!
//! Configuration comes from the SDK's standard chain (environment,
//! profiles, SSO, AWS_ENDPOINT_URL), so LocalStack and moto work unchanged.

pub mod calls;
pub mod ec2;
pub mod iam;
pub mod lock;
pub mod logs;
pub mod rds;
pub mod s3;
pub mod tagging;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;

use crate::desired::{self, Facts};
use crate::executor::{BoxFuture, Operator, Phase, Step};
use crate::model::{Attrs, Kind, Observed, Value};
use crate::password;
use crate::plan::{AttrChange, Change};
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
    Lock(#[from] lock::Error),
    #[error(
        "failed to find out which AWS account to use: {}\n  (check your credentials: --profile or AWS_PROFILE (~/.aws/config), \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or `aws sso login`, and AWS_ENDPOINT_URL if you use an emulator)",
        ec2::describe(source)
    )]
    Identity {
        #[source]
        source: aws_sdk_sts::Error,
    },
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
            Error::Lock(e) => e.code(),
            Error::Identity { source } => source.code(),
        }
    }
}

/// Clients for one stack in one region.
pub struct Aws {
    /// How many calls each stage and step made, for the critical path.
    pub depth: Depth,
    pub arns: Arns,
    /// The stack's lock (see `lock`).
    pub locks: lock::Locks,
    pub ec2: ec2::Ec2,
    pub rds: rds::Rds,
    pub s3: s3::S3,
    pub logs: logs::Logs,
    pub iam: iam::Iam,
}

/// The calls made one after another: per stage of a run (identity,
/// observe, facts, lock, outputs: the most any of its concurrent branches
/// made) and per executed step. With a fixed latency per call, no run can
/// be faster than the critical path these give, times the latency.
#[derive(Debug, Default)]
pub struct Depth {
    stages: std::sync::Mutex<Vec<(&'static str, usize)>>,
    steps: std::sync::Mutex<std::collections::HashMap<Step, usize>>,
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

    /// The calls of the stages, and those of the heaviest chain of
    /// dependent steps of `plan`.
    pub fn critical_path(&self, plan: &crate::plan::Plan) -> (usize, usize) {
        let stages: usize = self
            .stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, n)| n)
            .sum();
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let chain = crate::executor::critical_path(plan, |s| steps.get(s).copied().unwrap_or(0));
        (stages, chain)
    }
}

/// How to reach AWS beyond the standard chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `--profile`: this profile's credentials and settings, even when
    /// AWS_ACCESS_KEY_ID is set.
    pub profile: Option<String>,
}

/// What a destroy may also throw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestroyOptions {
    pub skip_final_snapshot: bool,
    pub delete_bucket_contents: bool,
}

pub use crate::outputs::Outputs;

impl Aws {
    /// Loads the SDK configuration for the stack's region and checks the
    /// credentials with one STS call, so a missing profile fails first.
    pub async fn connect(stack: &Stack, settings: &Settings) -> Result<Self, Error> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(stack.region.clone()));
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
            .build();
        let identity = aws_sdk_sts::Client::from_conf(sts)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| Error::Identity { source: e.into() })?;
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
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
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
                    $sdk::config::Builder::from(&config)
                        .interceptor(calls::CallLog)
                        .build(),
                )
            };
        }
        let tagging_client = client!(aws_sdk_resourcegroupstagging);
        let logs_client = client!(aws_sdk_cloudwatchlogs);
        let mut rds = rds::Rds::new(
            client!(aws_sdk_rds),
            &stack.prefix,
            stack.name("db-subnets"),
            desired::database_identifier(stack),
            stack.db_password.clone(),
        );
        rds.wanted(stack.database.is_some());
        Ok(Aws {
            depth: Depth::starting_with("identity", 1),
            s3: s3::S3::new(
                aws_sdk_s3::Client::from_conf(s3_config),
                tagging::Tagging::new(tagging_client.clone(), &stack.prefix),
                &stack.prefix,
                &stack.storage.bucket,
                &stack.region,
            ),
            locks: lock::Locks::new(
                logs_client.clone(),
                &stack.prefix,
                arns.log_group(&lock::Locks::group_name(&stack.prefix)),
            ),
            logs: logs::Logs::new(
                logs_client,
                tagging::Tagging::new(tagging_client, &stack.prefix),
                &stack.prefix,
                &stack.logs.group,
                arns.log_group(&stack.logs.group),
            ),
            iam: iam::Iam::new(
                client!(aws_sdk_iam),
                &stack.prefix,
                arns.clone(),
                iam::Names {
                    s3_policy: stack.name("s3-access"),
                    logs_policy: stack.name("cloudwatch-logs"),
                    role: stack.name("app-role"),
                    profile: stack.name("app-profile"),
                    user: stack.name("s3-user"),
                },
                crate::db_info::access_key_path(&stack.path),
                &stack.storage.bucket,
            ),
            arns,
            ec2: ec2::Ec2::new(client!(aws_sdk_ec2), &stack.prefix, Budgets::default()),
            rds,
        })
    }

    /// [`Aws::connect`], with what a destroy may throw away set for `goal`.
    pub async fn connect_for(
        stack: &Stack,
        settings: &Settings,
        goal: crate::Goal,
    ) -> Result<Self, Error> {
        let mut aws = Aws::connect(stack, settings).await?;
        if let crate::Goal::Destroy(options) = goal {
            aws.rds.skip_final_snapshot(options.skip_final_snapshot);
            aws.s3.delete_contents(options.delete_bucket_contents);
        }
        aws.ec2.keep_server_disk(goal.keeps_server_disk(stack));
        Ok(aws)
    }

    /// Every live resource of the stack.
    pub async fn observe(&self) -> Result<Vec<Observed>, Error> {
        use calls::counted;
        let ((ec2, a), (rds, b), (s3, c), (logs, d), (iam, e)) = tokio::join!(
            counted(self.ec2.observe()),
            counted(self.rds.observe()),
            counted(self.s3.observe()),
            counted(self.logs.observe()),
            counted(self.iam.observe())
        );
        self.depth
            .stage("observe", [a, b, c, d, e].into_iter().max());
        Ok([ec2?, rds?, s3?, logs?, iam?].concat())
    }

    /// What planning must learn from AWS: the key pair exists, which image a
    /// new server would use, and whether the password changed.
    pub async fn facts(&self, stack: &Stack, observed: &[Observed]) -> Result<Facts, Error> {
        let Some(server) = &stack.instance else {
            // No server: neither its key pair nor its image matter.
            return Ok(Facts {
                image: None,
                image_choice: String::new(),
                password_hash: self.password_hash(stack, observed).await,
                arns: self.arns.clone(),
            });
        };
        let ((key, a), (image, b)) = tokio::join!(
            calls::counted(self.ec2.check_key_pair(&stack.key_name, &stack.region)),
            calls::counted(self.ec2.choose_image(
                &server.image,
                &server.instance_type,
                &stack.region
            )),
        );
        self.depth.stage("facts", Some(a.max(b)));
        key?;
        let (image_choice, image) = image?;
        Ok(Facts {
            image,
            image_choice,
            password_hash: self.password_hash(stack, observed).await,
            arns: self.arns.clone(),
        })
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
            match stack.instance {
                Some(_) => self.ec2.server_address().await,
                None => Ok(None),
            }
        };
        let database = async {
            match stack.database {
                Some(_) => self.rds.endpoint().await,
                None => Ok(None),
            }
        };
        let ((server, a), (database, b)) =
            tokio::join!(calls::counted(server), calls::counted(database));
        self.depth.stage("outputs", Some(a.max(b)));
        let (instance_dns, instance_ip) = server?.unzip();
        let key_file = crate::db_info::access_key_path(&stack.path);
        Ok(Outputs {
            instance_dns,
            instance_ip: instance_ip.flatten(),
            key_name: stack.key_name.clone(),
            database: database?,
            region: stack.region.clone(),
            bucket: stack.storage.bucket.clone(),
            log_group: stack.logs.group.clone(),
            access_key_file: (stack.storage.access_key && key_file.exists())
                .then(|| key_file.display().to_string()),
            no_server: stack.instance.is_none(),
        })
    }
}

/// Behind an endpoint override (LocalStack at `localhost:4566`, moto) a
/// bucket name can't be put in front of the host name: address buckets by
/// path there, and by host name on AWS itself.
fn path_style(endpoint_url: Option<&str>, s3_endpoint_set: bool) -> bool {
    endpoint_url.is_some() || s3_endpoint_set
}

/// Which service a kind belongs to.
enum Service {
    Ec2,
    Rds,
    S3,
    Logs,
    Iam,
}

fn service(kind: Kind) -> Service {
    match kind {
        Kind::DbSubnetGroup | Kind::Database => Service::Rds,
        Kind::Bucket => Service::S3,
        Kind::LogGroup => Service::Logs,
        Kind::IamPolicy
        | Kind::IamRole
        | Kind::InstanceProfile
        | Kind::IamUser
        | Kind::AccessKey => Service::Iam,
        Kind::Vpc
        | Kind::InternetGateway
        | Kind::Subnet
        | Kind::SecurityGroup
        | Kind::RouteTable
        | Kind::Instance => Service::Ec2,
    }
}

impl Operator for Aws {
    type Error = Error;

    fn create<'a>(
        &'a self,
        change: &'a Change,
        attrs: Attrs,
    ) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(self.depth.step(change, Phase::Create, async move {
            let (address, tags) = (&change.address, &change.tags);
            Ok(match service(address.kind) {
                Service::Ec2 => self.ec2.create(address, tags, &attrs).await?,
                Service::Rds => self.rds.create(address, tags, &attrs).await?,
                Service::S3 => self.s3.create(address, tags, &attrs).await?,
                Service::Logs => self.logs.create(address, tags, &attrs).await?,
                Service::Iam => self.iam.create(address, tags, &attrs).await?,
            })
        }))
    }

    fn update<'a>(
        &'a self,
        change: &'a Change,
        id: &'a str,
        attrs: Vec<AttrChange>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.depth.step(change, Phase::Update, async move {
            let address = &change.address;
            match service(address.kind) {
                Service::Ec2 => self.ec2.update(address, id, &attrs).await?,
                Service::Rds => self.rds.update(address, &attrs).await?,
                Service::S3 => self.s3.update(&attrs).await?,
                Service::Logs => self.logs.update(&attrs).await?,
                Service::Iam => self.iam.update(address, id, &attrs).await?,
            }
            Ok(())
        }))
    }

    fn delete<'a>(
        &'a self,
        change: &'a Change,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(self.depth.step(change, Phase::Delete, async move {
            let address = &change.address;
            match service(address.kind) {
                Service::Ec2 => return Ok(self.ec2.delete(address, id).await?),
                Service::Rds => return Ok(self.rds.delete(address).await?),
                Service::S3 => self.s3.delete(id).await?,
                Service::Logs => self.logs.delete(id).await?,
                Service::Iam => self.iam.delete(address, id).await?,
            }
            Ok(None)
        }))
    }
}

/// Whether AWS may have done a call that failed this way: the answer was
/// lost on the way (timeout, dropped connection, unreadable) or AWS failed
/// after taking it (5xx other than throttling). For creates without an
/// idempotency token, which must not be resent blindly.
pub(crate) fn maybe_done<E: aws_sdk_sts::error::ProvideErrorMetadata>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            status >= 500 && !is_throttle(e.code())
        }
        _ => false,
    }
}

/// AWS's throttling codes: not done, send again later.
pub(crate) fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled")
    )
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
    fn buckets_by_path_only_behind_an_endpoint_override() {
        assert!(!path_style(None, false), "virtual-host style on AWS");
        assert!(path_style(Some("http://localhost:4566"), false));
        assert!(path_style(None, true), "AWS_ENDPOINT_URL_S3 alone");
    }
}
