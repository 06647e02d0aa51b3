//! One apply or destroy, from taking the stack's lock to releasing it:
//! connect, lock, plan, execute, write db_info.txt, release. The binary
//! only asks, renders and handles Ctrl-C between these steps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::aws::lock::{Holder, Lock};
use crate::aws::{self, Aws, Outputs, calls};
use crate::executor::{self, Observer, Outcome};
use crate::plan::Plan;
use crate::stack::Stack;
use crate::{Error, Goal, db_info};

pub struct Session {
    aws: Arc<Aws>,
    lock: Lock,
    goal: Goal,
}

impl Session {
    /// Connects and takes the stack's lock, waiting up to `lock_timeout`
    /// while another run holds it. `command` names this run to others.
    pub async fn open(
        stack: &Stack,
        settings: &aws::Settings,
        goal: Goal,
        command: &str,
        lock_timeout: Duration,
    ) -> Result<Session, Error> {
        let aws = Aws::connect_for(stack, settings, goal).await?;
        let (lock, lock_calls) =
            calls::counted(aws.locks.acquire(&Holder::me(command), lock_timeout)).await;
        let lock = lock?;
        aws.depth.stage("lock", Some(lock_calls));
        Ok(Session {
            aws: Arc::new(aws),
            lock,
            goal,
        })
    }

    /// The lock, for a Ctrl-C handler that must release it on its way out.
    pub fn lock(&self) -> Lock {
        self.lock.clone()
    }

    pub async fn plan(&self, stack: &Stack) -> Result<Plan, Error> {
        crate::plan_with(&self.aws, stack, self.goal).await
    }

    pub async fn execute(
        &self,
        plan: &Plan,
        observer: &dyn Observer,
        stop: impl std::future::Future<Output = ()>,
    ) -> Outcome<aws::Error> {
        executor::execute(plan, self.aws.clone(), observer, stop).await
    }

    /// After every apply: db_info.txt next to the stack file (0600), and
    /// the outputs it was made from. A stack without a server or without a
    /// database has no db_info.txt to write (None).
    pub async fn write_db_info(&self, stack: &Stack) -> Result<(Option<PathBuf>, Outputs), Error> {
        let outputs = self.aws.outputs(stack).await?;
        if stack.instance.is_none() || stack.database.is_none() {
            return Ok((None, outputs));
        }
        let (Some(instance_dns), Some(database)) = (&outputs.instance_dns, &outputs.database)
        else {
            return Err(Error::Incomplete);
        };
        let path = db_info::path_for(&stack.path);
        db_info::write(
            &path,
            instance_dns,
            &database.endpoint,
            &database.username,
            &stack.db_password,
        )
        .map_err(|source| Error::DbInfo {
            path: path.clone(),
            source,
        })?;
        Ok((Some(path), outputs))
    }

    /// Logs the run's critical path (at -v): with a fixed latency per call,
    /// nothing can beat this many round trips one after another; the lock's
    /// release is the last.
    pub fn log_critical_path(&self, plan: &Plan) {
        let (stages, chain) = self.aws.depth.critical_path(plan);
        tracing::info!(
            critical_path_calls = stages + chain + 1,
            planning_and_outputs = stages,
            changes = chain,
            calls = calls::calls() + 1,
            "critical path"
        );
    }

    /// Releases the lock.
    pub async fn close(self) -> Result<(), aws::lock::Error> {
        self.lock.release().await
    }
}
