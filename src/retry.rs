//! Retrying: the budget of every AWS call, and the answers that mean "not
//! yet", for a bounded time.
//!
//! Throttling and transient network errors are the SDK's own retry's job,
//! with the budget set here. The answers it does not retry are retried
//! below: a resource just created that a second call can't see yet, and a
//! delete refused while something that depends on the resource drains away.

use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
use aws_smithy_types::retry::RetryConfig;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// Attempts per AWS call when the user set none (`AWS_MAX_ATTEMPTS`, the
/// profile's `max_attempts`): on a bad link a run takes longer rather than
/// failing. The SDK's default of 3 lost 2 of 10 applies to a link with 18%
/// faults; Terraform's AWS provider tries 25 times.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// The longest wait between two attempts of one call (the SDK's own cap).
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The SDK's retry for every client when the user set no attempts: its
/// standard mode (exponential backoff with full jitter, for throttling, 5xx
/// answers and broken connections only) with ihp-infra's budget.
pub fn sdk_retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(DEFAULT_MAX_ATTEMPTS)
        .with_max_backoff(MAX_BACKOFF)
}

/// For the first call of a run: a refused connection is a wrong endpoint or
/// nothing listening far more often than a flaky link, so it is told at
/// once instead of after the whole budget (a minute).
#[derive(Debug)]
pub struct RefusedIsFinal;

impl ClassifyRetry for RefusedIsFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(connector) = error.as_connector_error() else {
            return RetryAction::NoActionIndicated;
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(connector);
        while let Some(e) = source {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                return RetryAction::RetryForbidden;
            }
            source = e.source();
        }
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "a refused connection is final"
    }
}

/// The waits between the attempts ihp-infra sends itself (creates without
/// an idempotency token, each sent again only after looking for it):
/// exponential from 200 ms with jitter, capped, `attempts - 1` of them, so
/// such a create gets the same budget as every other call.
pub fn resend_waits(attempts: u32) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(MAX_BACKOFF)
        .with_max_times(attempts.saturating_sub(1) as usize)
        .with_jitter()
        .build()
}

/// How long each kind of "not yet" is waited out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// A resource created a moment ago is not visible to the next call.
    pub visibility: Duration,
    /// `DependencyViolation`: e.g. a terminated instance's interface still
    /// holds a security group. AWS can take minutes to let go.
    pub dependency: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            visibility: Duration::from_secs(60),
            dependency: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotYet {
    /// Eventual consistency right after a create.
    NotVisible,
    /// Something still depends on what we delete.
    DependencyViolation,
}

/// IAM is eventually consistent: for a few seconds after an instance
/// profile is made, RunInstances says it is invalid.
pub fn profile_not_ready(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("InvalidParameterValue")
        && message
            .is_some_and(|m| m.contains("iamInstanceProfile") || m.contains("Instance Profile"))
}

/// Classifies an AWS error code. Only codes that can turn into success by
/// waiting are retryable; everything else fails at once.
pub fn classify(code: Option<&str>) -> Option<NotYet> {
    let code = code?;
    if code == "DependencyViolation" {
        return Some(NotYet::DependencyViolation);
    }
    // EC2 spells not-found as Invalid<Thing>ID.NotFound / Invalid<Thing>.NotFound.
    if code.starts_with("Invalid") && code.ends_with(".NotFound") {
        return Some(NotYet::NotVisible);
    }
    None
}

/// Runs `op`, retrying while its error is of the `kind` given, with
/// exponential backoff (1 s up to 15 s) until `budget` has been spent.
pub async fn retry<T, E, F, Fut>(kind: NotYet, budget: Duration, op: F) -> Result<T, E>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    retry_if(budget, |e: &E| classify(e.code()) == Some(kind), op).await
}

/// Like [`retry`], for "not yet" answers only their message tells apart
/// (e.g. an instance profile RunInstances can't see yet).
pub async fn retry_if<T, E, F, Fut>(
    budget: Duration,
    not_yet: impl FnMut(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(15))
        .without_max_times()
        .with_total_delay(Some(budget));
    (|| op())
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(not_yet)
        .notify(|e: &E, wait: Duration| {
            tracing::info!(
                code = e.code().unwrap_or(""),
                wait_ms = wait.as_millis() as u64,
                "aws answered not yet, retrying"
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    fn err(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message("m").build()
    }

    #[test]
    fn resends_wait_longer_each_time_up_to_the_cap() {
        let waits: Vec<Duration> = resend_waits(DEFAULT_MAX_ATTEMPTS).collect();
        assert_eq!(waits.len(), DEFAULT_MAX_ATTEMPTS as usize - 1);
        // 200 ms doubling, plus up to as much again of jitter, capped.
        for (i, wait) in waits.iter().enumerate() {
            let base = Duration::from_millis(200 << i).min(MAX_BACKOFF);
            assert!(*wait >= base && *wait <= base * 2, "{i}: {wait:?}");
        }
        assert_eq!(resend_waits(1).count(), 0);
    }

    #[test]
    fn the_sdk_gets_the_larger_budget() {
        let config = sdk_retry_config();
        assert_eq!(config.max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert_eq!(config.mode(), aws_smithy_types::retry::RetryMode::Standard);
        assert_eq!(config.max_backoff(), MAX_BACKOFF);
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(Some("DependencyViolation")),
            Some(NotYet::DependencyViolation)
        );
        assert_eq!(
            classify(Some("InvalidVpcID.NotFound")),
            Some(NotYet::NotVisible)
        );
        assert_eq!(
            classify(Some("InvalidGroup.NotFound")),
            Some(NotYet::NotVisible)
        );
        assert_eq!(classify(Some("InvalidParameterValue")), None);
        assert_eq!(classify(Some("UnauthorizedOperation")), None);
        assert_eq!(classify(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_dependency_violation_until_it_clears() {
        let calls = AtomicU32::new(0);
        let result: Result<&str, ErrorMetadata> = retry(
            NotYet::DependencyViolation,
            Duration::from_secs(600),
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(err("DependencyViolation"))
                } else {
                    Ok("deleted")
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), "deleted");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_budget() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let result: Result<(), ErrorMetadata> = retry(
            NotYet::DependencyViolation,
            Duration::from_secs(120),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err("DependencyViolation"))
            },
        )
        .await;
        assert_eq!(result.unwrap_err().code(), Some("DependencyViolation"));
        let waited = start.elapsed();
        assert!(waited <= Duration::from_secs(120 + 15), "{waited:?}");
        assert!(waited >= Duration::from_secs(100), "{waited:?}");
        assert!(calls.load(Ordering::SeqCst) > 3);
    }

    #[test]
    fn profile_propagation_is_told_by_its_message() {
        assert!(profile_not_ready(
            Some("InvalidParameterValue"),
            Some(
                "Value (demo-app-profile) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
            )
        ));
        assert!(!profile_not_ready(
            Some("InvalidParameterValue"),
            Some("Invalid value for instance type")
        ));
        assert!(!profile_not_ready(
            Some("InvalidAMIID.NotFound"),
            Some("iamInstanceProfile")
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), ErrorMetadata> = retry(
            NotYet::DependencyViolation,
            Duration::from_secs(600),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err("InvalidParameterValue"))
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_is_not_retried_as_a_dependency_violation() {
        let calls = AtomicU32::new(0);
        let _: Result<(), ErrorMetadata> = retry(
            NotYet::DependencyViolation,
            Duration::from_secs(600),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err("InvalidVpcID.NotFound"))
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
