//! One apply or destroy per stack at a time, with the lock kept in AWS
//! (two people may run from two machines).
//!
//! The lock of stack `<prefix>` is the log group `/ihp-infra/locks/<prefix>`
//! in the stack's region: CloudWatch Logs, which the stack uses anyway. The
//! group is created together with tags that say who holds it, in one atomic
//! call (a second create fails with ResourceAlreadyExistsException), so there
//! is never a lock without its holder; the group's creation time says since
//! when. Releasing deletes the group. A run killed on this machine is seen to
//! be gone (its pid no longer runs ihp-infra) and its lock taken over; one
//! from a lost machine is broken with `ihp-infra unlock`. The group carries no
//! stack tag, so no stack ever plans to delete it.
//!
//! Taking over is guarded: two runs that both find the same dead run's lock
//! must not both delete it (the later delete would remove the lock the
//! earlier run just took). Only runs on the dead run's machine ever take
//! over, so a file lock on this machine (flock, in `/tmp`) lets one at a time
//! read the lock again and delete it only if it is still the dead run's. The
//! kernel releases a file lock with its process: a run killed while taking
//! over leaves nothing behind.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use backon::BackoffBuilder;

/// Where the locks live: one log group per stack under this prefix.
pub const LOCK_GROUPS: &str = "/ihp-infra/locks/";
const TAG_LOCK: &str = "ihp-infra:lock";
const TAG_WHO: &str = "ihp-infra:holder";
const TAG_PID: &str = "ihp-infra:pid";
const TAG_COMMAND: &str = "ihp-infra:command";

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_secs(2);

/// How long releasing the lock goes on through failures that can pass.
const RELEASE_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "stack {prefix} is locked: {} is running since {}{}\n  \
         wait for it with --lock-timeout (e.g. --lock-timeout 10m); if that run is gone \
         (crashed, killed, machine lost), break the lock with `ihp-infra unlock`",
        holder.as_ref().map_or("another ihp-infra".to_string(), Holder::describe),
        since.as_deref().unwrap_or("(unknown)"),
        if *waited > Duration::ZERO { format!(" (waited {})", humantime::format_duration(Duration::from_secs(waited.as_secs()))) } else { String::new() }
    )]
    Held {
        prefix: String,
        holder: Option<Holder>,
        since: Option<String>,
        waited: Duration,
    },
    #[error(
        "failed to take over the lock of stack {prefix} from a run that is gone: {}: {source}\n  \
         break the lock with `ihp-infra unlock`",
        path.display()
    )]
    Takeover {
        prefix: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CloudWatch Logs call on the lock failed.
    #[error(transparent)]
    Call(#[from] super::logs::Error),
}

impl Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call(e) => e.code(),
            Error::Held { .. } | Error::Takeover { .. } => None,
        }
    }
}

/// Who holds a lock: written into the lock when taken, shown to whoever
/// finds it taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// user@host
    pub who: String,
    pub pid: u32,
    /// e.g. "apply"
    pub command: String,
}

impl Holder {
    /// This process.
    pub fn me(command: &str) -> Holder {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "someone".into());
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Holder {
            who: format!("{user}@{host}"),
            pid: std::process::id(),
            command: command.to_string(),
        }
    }

    /// Whether this holder was a process on this machine that no longer
    /// runs (or whose pid now belongs to another program). A holder on
    /// another machine is never known to be gone: `ihp-infra unlock` is for
    /// that.
    pub fn is_gone(&self) -> bool {
        let me = Holder::me("");
        if self.who != me.who || self.pid == me.pid {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            return true;
        }
        // A reused pid runs another program.
        program_of(pid).is_some_and(|name| !name.starts_with("ihp-infra"))
    }

    pub fn describe(&self) -> String {
        format!(
            "`ihp-infra {}` of {} (pid {})",
            self.command, self.who, self.pid
        )
    }
}

/// The name of the program a live pid runs, where the system says: Linux
/// through /proc, macOS through libproc. None where neither is (the holder
/// then counts as alive: `ihp-infra unlock` is the way out).
#[cfg(target_os = "linux")]
fn program_of(pid: i32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

#[cfg(target_os = "macos")]
fn program_of(pid: i32) -> Option<String> {
    let mut name = [0u8; 256];
    // SAFETY: proc_name writes at most the given size into the buffer and
    // returns how much it wrote (0 or less on failure).
    let len = unsafe { libc::proc_name(pid, name.as_mut_ptr().cast(), name.len() as u32) };
    let len = usize::try_from(len).ok().filter(|&n| n > 0)?;
    Some(String::from_utf8_lossy(&name[..len.min(name.len())]).into_owned())
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn program_of(_pid: i32) -> Option<String> {
    None
}

/// What is known about a taken lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub holder: Option<Holder>,
    /// RFC 3339, UTC.
    pub since: Option<String>,
    /// The lock group's creation time (ms since the epoch): which lock this
    /// is, as a lock released and taken again is a new group.
    pub created: Option<i64>,
}

#[derive(Clone)]
pub struct Locks {
    client: Client,
    prefix: String,
    group: String,
    /// The group's ARN, for its tags.
    arn: String,
}

/// A lock this process holds. Release it with [`Lock::release`]; a clone
/// may release it from a signal handler.
#[derive(Clone)]
pub struct Lock {
    locks: Locks,
}

/// The logs module's call error, about the lock of stack `prefix`.
fn call<E, R>(action: &'static str, prefix: &str) -> impl FnOnce(SdkError<E, R>) -> Error
where
    aws_sdk_cloudwatchlogs::Error: From<SdkError<E, R>>,
{
    let failed = super::logs::Call::on(action, format!("the lock of stack {prefix}"));
    move |e| Error::Call(failed(e).into())
}

impl Locks {
    /// `arn` is the ARN of log group [`Locks::group_name`]`(prefix)`.
    pub fn new(client: Client, prefix: &str, arn: String) -> Self {
        Locks {
            client,
            prefix: prefix.to_string(),
            group: Locks::group_name(prefix),
            arn,
        }
    }

    pub fn group_name(prefix: &str) -> String {
        format!("{LOCK_GROUPS}{prefix}")
    }

    /// Takes the lock, waiting up to `timeout` while someone else holds it.
    pub async fn acquire(&self, me: &Holder, timeout: Duration) -> Result<Lock, Error> {
        let started = Instant::now();
        loop {
            let created = self
                .client
                .create_log_group()
                .log_group_name(&self.group)
                .tags(TAG_LOCK, &self.prefix)
                .tags(TAG_WHO, &me.who)
                .tags(TAG_PID, me.pid.to_string())
                .tags(TAG_COMMAND, &me.command)
                .send()
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(stack = %self.prefix, "lock taken");
                    return Ok(Lock {
                        locks: self.clone(),
                    });
                }
                Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {
                    let taken = self.taken().await?;
                    if taken.as_ref().and_then(|t| t.holder.as_ref()) == Some(me) {
                        // Our own create, done by AWS, whose answer was lost:
                        // the SDK sent it again.
                        tracing::info!(stack = %self.prefix, "lock taken (the first answer was lost)");
                        return Ok(Lock {
                            locks: self.clone(),
                        });
                    }
                    if let Some(Taken {
                        holder: Some(holder),
                        ..
                    }) = &taken
                        && holder.is_gone()
                    {
                        // A run on this machine that was killed (-9, power
                        // loss): nobody else can be using the lock. One run
                        // here at a time takes it over, reading it again
                        // first (another may have done so already); the
                        // others wait as for any lock.
                        if let Some(_guard) = takeover_guard(&self.prefix, &me.who)? {
                            if self.taken().await? == taken {
                                self.delete().await?;
                                tracing::warn!(stack = %self.prefix, pid = holder.pid, "took over the lock of a run on this machine that is gone");
                            }
                            continue;
                        }
                    }
                    let waited = started.elapsed();
                    if waited >= timeout {
                        let taken = taken.unwrap_or(Taken {
                            holder: None,
                            since: None,
                            created: None,
                        });
                        return Err(Error::Held {
                            prefix: self.prefix.clone(),
                            holder: taken.holder,
                            since: taken.since,
                            waited,
                        });
                    }
                    tracing::info!(stack = %self.prefix, "waiting for the lock");
                    tokio::time::sleep(POLL.min(timeout - waited)).await;
                }
                Err(e) => return Err(call("take", &self.prefix)(e)),
            }
        }
    }

    /// Who holds the lock, if anyone.
    pub async fn taken(&self) -> Result<Option<Taken>, Error> {
        let groups = self
            .client
            .describe_log_groups()
            .log_group_name_prefix(&self.group)
            .send()
            .await
            .map_err(call("read", &self.prefix))?;
        let Some(group) = groups
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(self.group.as_str()))
        else {
            return Ok(None);
        };
        let created = group.creation_time();
        let since = created.map(|ms| {
            aws_smithy_types::DateTime::from_millis(ms)
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap_or_default()
        });
        let tags = match self
            .client
            .list_tags_for_resource()
            .resource_arn(&self.arn)
            .send()
            .await
        {
            Ok(out) => out.tags().cloned().unwrap_or_default(),
            // Released between the two calls.
            Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(call("read", &self.prefix)(e)),
        };
        let holder = match (tags.get(TAG_WHO), tags.get(TAG_PID), tags.get(TAG_COMMAND)) {
            (Some(who), Some(pid), Some(command)) => pid.parse().ok().map(|pid| Holder {
                who: who.clone(),
                pid,
                command: command.clone(),
            }),
            _ => None,
        };
        Ok(Some(Taken {
            holder,
            since,
            created,
        }))
    }

    /// Deletes the lock whoever holds it; returns what it said.
    pub async fn break_lock(&self) -> Result<Option<Taken>, Error> {
        let taken = self.taken().await?;
        if taken.is_some() {
            self.delete().await?;
        }
        Ok(taken)
    }

    /// Deletes the lock's group. A lock left behind stops every later run
    /// until `unlock`, so when the SDK's attempts are spent on a failure
    /// that can pass (no answer, throttling, a 5xx), it goes on trying, with
    /// backoff, for up to [`RELEASE_PATIENCE`]; any other error ends it.
    async fn delete(&self) -> Result<(), Error> {
        let mut waits = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(crate::retry::MAX_BACKOFF)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(RELEASE_PATIENCE))
            .build();
        loop {
            let e = match self
                .client
                .delete_log_group()
                .log_group_name(&self.group)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(()),
                Err(e) => e,
            };
            let may_pass = super::service::maybe_done(&e) || super::service::is_throttle(e.code());
            match waits.next() {
                Some(wait) if may_pass => {
                    tracing::info!(
                        stack = %self.prefix,
                        error = %super::service::describe(&e),
                        wait_ms = wait.as_millis() as u64,
                        "failed to release the lock; trying again"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(call("release", &self.prefix)(e)),
            }
        }
    }
}

/// Where the runs on this machine take turns to take over stack `prefix`'s
/// lock: `$XDG_RUNTIME_DIR`, else `/tmp` (not `$TMPDIR`, which two jobs on one
/// machine may set differently), one file per user and stack.
fn takeover_path(prefix: &str, who: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| "/tmp".into());
    let who: String = who
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("ihp-infra-{who}-{prefix}.takeover"))
}

/// This machine's takeover lock of stack `prefix`, if no other run here
/// holds it; held until the returned file is dropped (or the process dies).
fn takeover_guard(prefix: &str, who: &str) -> Result<Option<std::fs::File>, Error> {
    let path = takeover_path(prefix, who);
    let failed = |source| Error::Takeover {
        prefix: prefix.to_string(),
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

impl Lock {
    pub async fn release(&self) -> Result<(), Error> {
        self.locks.delete().await?;
        tracing::info!(stack = %self.locks.prefix, "lock released");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_file_is_one_per_user_host_and_stack() {
        let path = takeover_path("demo", "ana/x@host 1");
        assert_eq!(
            path.file_name().unwrap(),
            "ihp-infra-ana_x@host_1-demo.takeover"
        );
        assert_ne!(path, takeover_path("other", "ana/x@host 1"));
    }

    #[test]
    fn one_takeover_at_a_time_and_none_after_its_run_is_gone() {
        let prefix = format!("unit-test-{}", std::process::id());
        let first = takeover_guard(&prefix, "test@here").unwrap();
        assert!(first.is_some());
        // A second run on this machine doesn't get it while the first holds it.
        assert!(takeover_guard(&prefix, "test@here").unwrap().is_none());
        // Dropped (as when its process dies), the next one gets it. Another
        // test of this binary that starts a process may hold a forked copy
        // of the file for the moment between fork and exec: give it that.
        drop(first);
        let again = (0..50).find_map(|_| {
            let guard = takeover_guard(&prefix, "test@here").unwrap();
            if guard.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            guard
        });
        assert!(again.is_some());
        let _ = std::fs::remove_file(takeover_path(&prefix, "test@here"));
    }

    #[test]
    fn a_held_lock_says_who_since_when_and_what_to_do() {
        let e = Error::Held {
            prefix: "demo".into(),
            holder: Some(Holder {
                who: "ana@laptop".into(),
                pid: 4242,
                command: "apply".into(),
            }),
            since: Some("2026-11-25T20:31:02Z".into()),
            waited: Duration::from_millis(30_400),
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "stack demo is locked: `ihp-infra apply` of ana@laptop (pid 4242) is running since 2026-11-25T20:31:02Z (waited 30s)"
            ),
            "{text}"
        );
        assert!(text.contains("--lock-timeout") && text.contains("ihp-infra unlock"));
    }

    #[test]
    fn only_a_dead_run_on_this_machine_is_gone() {
        let me = Holder::me("apply");
        assert!(!me.is_gone(), "this process runs");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = Holder {
            pid: dead_pid,
            ..me.clone()
        };
        assert!(dead.is_gone());
        let elsewhere = Holder {
            who: "ana@another-machine".into(),
            ..dead.clone()
        };
        assert!(!elsewhere.is_gone(), "other machines are never guessed at");
        // A live pid running another program: the pid was reused.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let reused = Holder {
            pid: sleeper.id(),
            ..me
        };
        assert!(reused.is_gone());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
