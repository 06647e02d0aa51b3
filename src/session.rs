//! One apply or destroy, from taking the stack's lock to releasing it:
//! connect, lock, plan, execute, write db_info.txt, release. The binary
//! only asks, renders and handles Ctrl-C between these steps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::aws::lock::{Holder, Lock};
use crate::aws::{self, Aws, NewSecret, Outputs, calls};

use crate::executor::{self, Observer, Operator, Outcome};
use crate::model::Attrs;
use crate::plan::{AttrChange, Change, Plan};
use crate::stack::Stack;
use crate::{Error, Goal, db_info, handover, nixos};

/// What [`Session::write_module`] did.
pub struct ModuleWritten {
    pub path: PathBuf,
    /// False when the file already said the same.
    pub changed: bool,
    /// The project's configuration.nix, when it still imports IHP's
    /// appWithPostgres (a second Postgres on the server).
    pub app_with_postgres: Option<PathBuf>,
}

pub struct Session {
    aws: Arc<Aws>,
    lock: Lock,
    goal: Goal,
    /// Where a new access key's secret goes besides its parameter, when
    /// the stack asks for a local file (`storage.key_file`).
    key_file: Option<KeyFile>,
}

/// The access key file: the env-file IHP's S3 storage reads (mode 0600).
#[derive(Clone)]
struct KeyFile {
    path: PathBuf,
    region: String,
    bucket: String,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to write the access key to {}: {source}", path.display())]
pub struct KeyFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Carries out a plan's steps through the services; stores the secrets
/// they produce the moment they exist.
struct Steps {
    aws: Arc<Aws>,
    key_file: Option<KeyFile>,
}

impl Steps {
    /// A secret AWS shows only once: masked in every output from now on,
    /// and written before anything else happens.
    fn store(&self, secret: &NewSecret) -> Result<(), Error> {
        match secret {
            NewSecret::AccessKey { role, id, secret } => {
                // Masked from now on, and kept for its parameters, which
                // are written next (they depend on the key).
                self.aws.ssm.key.set(role, id, Some(secret));
                if role != handover::S3_KEY {
                    return Ok(());
                }
                let Some(KeyFile {
                    path,
                    region,
                    bucket,
                }) = &self.key_file
                else {
                    return Ok(());
                };
                let text = aws::iam::key_file_text(id, secret, region, bucket);
                db_info::write_private(path, &text).map_err(|source| {
                    Error::KeyFile(KeyFileError {
                        path: path.clone(),
                        source,
                    })
                })
            }
        }
    }
}

impl Operator for Steps {
    type Error = Error;

    async fn create(&self, change: &Change, attrs: Attrs) -> Result<String, Error> {
        let created = self.aws.create(change, attrs).await?;
        if let Some(secret) = &created.secret {
            self.store(secret)?;
        }
        Ok(created.id)
    }

    async fn update(&self, change: &Change, id: &str, attrs: Vec<AttrChange>) -> Result<(), Error> {
        Ok(self.aws.update(change, id, &attrs).await?)
    }

    async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, Error> {
        Ok(self.aws.delete(change, id).await?)
    }
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
        let aws = Aws::connect(stack, settings).await?;
        let (lock, lock_calls) =
            calls::counted(aws.locks.acquire(&Holder::me(command), lock_timeout)).await;
        let lock = lock?;
        aws.depth.stage("lock", Some(lock_calls));
        Ok(Session {
            aws: Arc::new(aws),
            lock,
            goal,
            key_file: stack.storage.key_file.then(|| KeyFile {
                path: db_info::access_key_path(&stack.path),
                region: stack.region.clone(),
                bucket: stack.storage.bucket.clone(),
            }),
        })
    }

    /// The connection, for what runs under the lock besides plan and
    /// execute (`adopt`).
    pub fn aws(&self) -> &Aws {
        &self.aws
    }

    /// The lock, for a Ctrl-C handler that must release it on its way out.
    pub fn lock(&self) -> Lock {
        self.lock.clone()
    }

    /// The plan, replacing the resources at `replacing` (`--replace`).
    pub async fn plan(
        &self,
        stack: &Stack,
        replacing: &[crate::model::Address],
    ) -> Result<Plan, Error> {
        crate::plan_replacing(&self.aws, stack, self.goal, replacing).await
    }

    pub async fn execute(
        &self,
        plan: &Plan,
        observer: &dyn Observer,
        stop: impl std::future::Future<Output = ()>,
    ) -> Outcome<Error> {
        let steps = Steps {
            aws: self.aws.clone(),
            key_file: self.key_file.clone(),
        };
        executor::execute(plan, Arc::new(steps), observer, stop).await
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

    /// After every apply of a stack with a server: the NixOS module, from
    /// the outputs, rewritten only when its text changes.
    pub fn write_module(
        &self,
        stack: &Stack,
        outputs: &Outputs,
    ) -> Result<Option<ModuleWritten>, Error> {
        let Some(server) = &stack.instance else {
            return Ok(None);
        };
        let path = stack
            .nixos_module
            .clone()
            .unwrap_or_else(|| nixos::default_path(&stack.path));
        let mut required = Vec::new();
        if outputs.database.is_some() {
            required.push(handover::DATABASE_URL.variable);
        }
        if stack.storage.access_key {
            required.extend([handover::KEY_ID.variable, handover::SECRET_KEY.variable]);
        }
        if stack.mail.as_ref().is_some_and(|m| m.enabled) {
            required.extend([
                handover::SMTP_USER.variable,
                handover::SMTP_PASSWORD.variable,
            ]);
        }
        let module = nixos::Module {
            prefix: stack.prefix.clone(),
            region: stack.region.clone(),
            system: outputs
                .system
                .clone()
                .unwrap_or_else(|| "x86_64-linux".into()),
            instance_type: server.instance_type.clone(),
            bucket: stack.storage.bucket.clone(),
            log_group: stack.logs.group.clone(),
            database_url: outputs.database.as_ref().map(|db| {
                handover::database_url_without_password(&db.username, &db.endpoint, db.port)
            }),
            required,
            domain: stack.domain.as_ref().map(|d| nixos::Domain {
                name: d.name.clone(),
                aliases: d.aliases.clone(),
                acme_email: d.acme_email.clone(),
            }),
            backups_bucket: stack.backups.as_ref().map(|b| b.bucket.clone()),
            smtp_host: stack
                .mail
                .as_ref()
                .filter(|m| m.enabled)
                .map(|_| crate::mail::smtp_host(&stack.region)),
        };
        let changed =
            nixos::write(&path, &nixos::render(&module)).map_err(|source| Error::DbInfo {
                path: path.clone(),
                source,
            })?;
        Ok(Some(ModuleWritten {
            app_with_postgres: nixos::imports_app_with_postgres(&path),
            path,
            changed,
        }))
    }

    /// Logs the run's critical path (at -v): with a fixed latency per call,
    /// nothing can beat this many round trips one after another; the lock's
    /// release is the last.
    pub fn log_critical_path(&self, plan: &Plan) {
        let depth = &self.aws.depth;
        let stages = depth.stage_calls();
        let chain = executor::critical_path(plan, |step| depth.step_calls(step));
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

/// `ihp-infra output`: what the server's configuration needs, read from AWS.
pub async fn outputs(stack: &Stack, settings: &aws::Settings) -> Result<Outputs, Error> {
    let aws = Aws::connect(stack, settings).await?;
    Ok(aws.outputs(stack).await?)
}

/// The stack's lock, for `ihp-infra unlock`.
pub struct StackLock {
    aws: Aws,
}

impl StackLock {
    pub async fn connect(stack: &Stack, settings: &aws::Settings) -> Result<StackLock, Error> {
        Ok(StackLock {
            aws: Aws::connect(stack, settings).await?,
        })
    }

    /// Who holds it, if anyone.
    pub async fn taken(&self) -> Result<Option<aws::lock::Taken>, Error> {
        Ok(self.aws.locks.taken().await?)
    }

    /// Breaks it, whoever holds it.
    pub async fn break_lock(&self) -> Result<(), Error> {
        self.aws.locks.break_lock().await?;
        Ok(())
    }
}
