//! Logs every AWS call attempt at `-v` (target `ihp_infra::aws::calls`):
//! service, operation, HTTP status, time taken, and the attempts the SDK
//! retried (throttling, 5xx, dropped connections), so the faults a run
//! survived are visible. Only names and statuses are logged, never a
//! request or response body: the password travels in one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

#[derive(Debug, Clone, Copy)]
pub struct CallLog;

/// Faults this process got past: attempts the SDK made again, and the
/// EC2 creates ihp-infra sent again or found done itself (the SDK must not
/// resend those, see `ec2::create_once`).
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// How many faults (throttling, 5xx, lost connections) this run has
/// survived so far.
pub fn retries() -> usize {
    RETRIES.load(Ordering::Relaxed)
}

/// Counts a fault that ihp-infra itself got past, not the SDK's retry: a
/// create sent again, or found done by its tags after its answer was lost.
pub fn survived_fault() {
    RETRIES.fetch_add(1, Ordering::Relaxed);
}

/// Calls made in this process (not counting retries).
static CALLS: AtomicUsize = AtomicUsize::new(0);

pub fn calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

tokio::task_local! {
    /// The calls made by the future running in [`counted`]: when each
    /// started and ended.
    static SPANS: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Option<Instant>)>>>;
}

/// Where this call's span is in the scope's list.
#[derive(Debug, Clone)]
struct SpanIndex(usize);

impl Storable for SpanIndex {
    type Storer = StoreReplace<Self>;
}

/// Runs `f` and returns the longest chain of its AWS calls that ran one
/// after another (each started after the one before had answered): calls
/// made at the same time count once. For the critical path of a run.
pub async fn counted<F: std::future::Future>(f: F) -> (F::Output, usize) {
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = SPANS.scope(spans.clone(), f).await;
    let spans = spans.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (out, longest_chain(&spans))
}

/// The most calls in a row where each starts after the previous ended.
fn longest_chain(spans: &[(Instant, Option<Instant>)]) -> usize {
    let mut spans: Vec<(Instant, Instant)> = spans
        .iter()
        .map(|(start, end)| (*start, end.unwrap_or(*start)))
        .collect();
    spans.sort();
    let mut chain = vec![1; spans.len()];
    for i in 0..spans.len() {
        for j in 0..i {
            if spans[j].1 <= spans[i].0 {
                chain[i] = chain[i].max(chain[j] + 1);
            }
        }
    }
    chain.into_iter().max().unwrap_or(0)
}

/// When the current attempt was sent.
#[derive(Debug, Clone)]
struct AttemptStarted(Instant);

impl Storable for AttemptStarted {
    type Storer = StoreReplace<Self>;
}

/// What one attempt came to, in a line.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(u16),
    /// No HTTP answer: a timeout or a dropped connection.
    Nothing(String),
}

fn fault(result: &Answer) -> bool {
    match result {
        Answer::Status(status) => *status == 429 || *status >= 500,
        Answer::Nothing(_) => true,
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "ihp-infra call log"
    }

    fn read_before_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let index = SPANS.try_with(|spans| {
            let mut spans = spans.lock().unwrap_or_else(|e| e.into_inner());
            spans.push((Instant::now(), None));
            spans.len() - 1
        });
        if let Ok(index) = index {
            cfg.interceptor_state().store_put(SpanIndex(index));
        }
        CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(SpanIndex(index)) = cfg.load::<SpanIndex>() {
            let _ = SPANS.try_with(|spans| {
                if let Some(span) = spans
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(*index)
                {
                    span.1 = Some(Instant::now());
                }
            });
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(AttemptStarted(Instant::now()));
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            RETRIES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default();
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        let elapsed_ms = cfg
            .load::<AttemptStarted>()
            .map_or(0, |s| s.0.elapsed().as_millis() as u64);
        let answer = match context.response() {
            Some(response) => Answer::Status(response.status().as_u16()),
            None => Answer::Nothing(match context.output_or_error() {
                Some(Err(e)) => no_response_reason(e),
                _ => "no response".into(),
            }),
        };
        match &answer {
            Answer::Status(status) if fault(&answer) => tracing::info!(
                target: "ihp_infra::aws::calls",
                service, operation, attempt, status, elapsed_ms,
                "aws call failed; the SDK retries it if it may"
            ),
            Answer::Status(status) if attempt > 1 => tracing::info!(
                target: "ihp_infra::aws::calls",
                service, operation, attempt, status, elapsed_ms,
                "aws call answered after a retry"
            ),
            Answer::Status(status) if *status >= 400 => tracing::info!(
                target: "ihp_infra::aws::calls",
                service, operation, attempt, status, elapsed_ms,
                "aws call answered with an error"
            ),
            Answer::Status(status) => tracing::info!(
                target: "ihp_infra::aws::calls",
                service, operation, status, elapsed_ms, "aws call"
            ),
            Answer::Nothing(reason) => tracing::info!(
                target: "ihp_infra::aws::calls",
                service, operation, attempt, reason, elapsed_ms,
                "aws call got no answer; the SDK retries it if it may"
            ),
        }
        Ok(())
    }
}

fn no_response_reason<E>(
    e: &aws_smithy_runtime_api::client::orchestrator::OrchestratorError<E>,
) -> String {
    if e.is_timeout_error() {
        "timeout".into()
    } else if e.is_connector_error() {
        "connection failed".into()
    } else {
        "no response".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_at_the_same_time_count_once_in_a_chain() {
        let t = Instant::now();
        let at = |ms: u64| t + std::time::Duration::from_millis(ms);
        // a then b one after another; c and d alongside a; e after b.
        let spans = [
            (at(0), Some(at(10))),
            (at(10), Some(at(20))),
            (at(0), Some(at(5))),
            (at(1), Some(at(9))),
            (at(25), Some(at(30))),
        ];
        assert_eq!(longest_chain(&spans), 3);
        assert_eq!(longest_chain(&spans[2..4]), 1);
        assert_eq!(longest_chain(&[]), 0);
    }

    #[test]
    fn throttling_server_errors_and_lost_connections_are_faults() {
        assert!(fault(&Answer::Status(429)));
        assert!(fault(&Answer::Status(503)));
        assert!(fault(&Answer::Nothing("timeout".into())));
        assert!(!fault(&Answer::Status(200)));
        assert!(!fault(&Answer::Status(400)), "a client error is final");
    }
}
