//! Carries out a plan: walks the dependency graph, running every operation
//! whose prerequisites are done at the same time as the others.
//!
//! A replacement is a delete followed by a create. Deletes run dependents
//! first; creates and updates run dependencies first. A failed operation
//! skips what depends on it and lets independent work finish.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::model::{Address, Attrs, Value};
use crate::plan::{Action, AttrChange, Change, Plan, has_pending, resolve};

/// The AWS side of execution: one call per operation, safe to repeat.
/// Generic, not boxed: the executor is the only caller.
pub trait Operator: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Creates the resource and returns its id.
    fn create(
        &self,
        change: &Change,
        attrs: Attrs,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;
    fn update(
        &self,
        change: &Change,
        id: &str,
        attrs: Vec<AttrChange>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Deletes the resource; may return a note for the user (e.g. the name
    /// of a final snapshot kept).
    fn delete(
        &self,
        change: &Change,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Delete,
    Create,
    Update,
}

impl Phase {
    pub fn verb(self) -> &'static str {
        match self {
            Phase::Delete => "delete",
            Phase::Create => "create",
            Phase::Update => "update",
        }
    }
}

/// One step of execution: a phase of one change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Step {
    pub address: Address,
    pub phase: Phase,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.phase.verb(), self.address)
    }
}

/// Told of each step as it starts and ends; renders progress.
pub trait Observer: Send + Sync {
    fn started(&self, step: &Step, change: &Change);
    fn finished(
        &self,
        step: &Step,
        change: &Change,
        outcome: Result<Option<&str>, &str>,
        elapsed: Duration,
    );
}

pub struct Outcome<E> {
    pub done: Vec<(Step, Duration)>,
    pub failed: Vec<(Step, E)>,
    /// Not started: a prerequisite failed, or execution was interrupted.
    pub skipped: Vec<Step>,
    pub interrupted: bool,
    /// Ids of everything that exists after execution.
    pub ids: HashMap<Address, String>,
    /// What deletes had to say (e.g. final snapshots kept).
    pub notes: Vec<String>,
}

impl<E> Outcome<E> {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }
}

struct Node {
    step: Step,
    change: usize,
    waits_for: Vec<usize>,
}

/// The steps of a plan and what each waits for.
fn graph(plan: &Plan) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut index: HashMap<Step, usize> = HashMap::new();
    for (i, c) in plan.changes.iter().enumerate() {
        let phases: &[Phase] = match c.action {
            Action::NoOp => &[],
            Action::Create => &[Phase::Create],
            Action::Update => &[Phase::Update],
            Action::Replace if c.address.kind.creates_before_deleting() => {
                &[Phase::Create, Phase::Delete]
            }
            Action::Replace => &[Phase::Delete, Phase::Create],
            Action::Delete => &[Phase::Delete],
        };
        for &phase in phases {
            let step = Step {
                address: c.address.clone(),
                phase,
            };
            index.insert(step.clone(), nodes.len());
            nodes.push(Node {
                step,
                change: i,
                waits_for: Vec::new(),
            });
        }
    }
    let find = |address: &Address, phase| {
        index
            .get(&Step {
                address: address.clone(),
                phase,
            })
            .copied()
    };
    for n in 0..nodes.len() {
        let change = &plan.changes[nodes[n].change];
        let mut waits = Vec::new();
        match nodes[n].step.phase {
            Phase::Create | Phase::Update => {
                for dep in &change.depends_on {
                    waits.extend(find(dep, Phase::Create));
                    waits.extend(find(dep, Phase::Update));
                }
                if nodes[n].step.phase == Phase::Create
                    && !change.address.kind.creates_before_deleting()
                {
                    waits.extend(find(&change.address, Phase::Delete));
                }
            }
            Phase::Delete => {
                if change.address.kind.creates_before_deleting() {
                    // The new one first, and what stores it.
                    waits.extend(find(&change.address, Phase::Create));
                    for (m, other) in nodes.iter().enumerate() {
                        if other.step.phase != Phase::Delete
                            && plan.changes[other.change]
                                .depends_on
                                .contains(&change.address)
                        {
                            waits.push(m);
                        }
                    }
                }
                // Wait for the deletes of everything that depends on this one.
                for (m, other) in nodes.iter().enumerate() {
                    if other.step.phase != Phase::Delete || m == n {
                        continue;
                    }
                    let dependent = &plan.changes[other.change];
                    if dependent.depends_on.contains(&change.address)
                        || dependent
                            .address
                            .kind
                            .parents()
                            .contains(&change.address.kind)
                    {
                        waits.push(m);
                    }
                }
            }
        }
        waits.sort_unstable();
        waits.dedup();
        nodes[n].waits_for = waits;
    }
    nodes
}

/// The heaviest chain of steps that wait for one another, each weighing
/// `weight` (e.g. the calls it made one after another).
pub fn critical_path(plan: &Plan, weight: impl Fn(&Step) -> usize) -> usize {
    let nodes = graph(plan);
    // Steps wait only for steps before them in some order: memoise.
    fn longest(
        n: usize,
        nodes: &[Node],
        weight: &dyn Fn(&Step) -> usize,
        memo: &mut [Option<usize>],
    ) -> usize {
        if let Some(v) = memo[n] {
            return v;
        }
        let before = nodes[n]
            .waits_for
            .iter()
            .map(|&w| longest(w, nodes, weight, memo))
            .max()
            .unwrap_or(0);
        let v = before + weight(&nodes[n].step);
        memo[n] = Some(v);
        v
    }
    let mut memo = vec![None; nodes.len()];
    (0..nodes.len())
        .map(|n| longest(n, &nodes, &weight, &mut memo))
        .max()
        .unwrap_or(0)
}

/// Runs the plan. `stop` resolving (e.g. on Ctrl-C) stops new steps from
/// starting; steps under way finish, so nothing is left half-made.
pub async fn execute<O: Operator>(
    plan: &Plan,
    operator: Arc<O>,
    observer: &dyn Observer,
    stop: impl Future<Output = ()>,
) -> Outcome<O::Error> {
    let nodes = graph(plan);
    let mut ids: HashMap<Address, String> = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::NoOp | Action::Update))
        .filter_map(|c| Some((c.address.clone(), c.id.clone()?)))
        .collect();

    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Waiting,
        Running,
        Done,
        Failed,
    }
    let mut state = vec![State::Waiting; nodes.len()];
    let mut outcome = Outcome {
        done: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        interrupted: false,
        ids: HashMap::new(),
        notes: Vec::new(),
    };
    let mut running = FuturesUnordered::new();
    tokio::pin!(stop);
    let mut stopping = false;

    loop {
        if !stopping {
            for n in 0..nodes.len() {
                if state[n] != State::Waiting
                    || !nodes[n].waits_for.iter().all(|&w| state[w] == State::Done)
                {
                    continue;
                }
                state[n] = State::Running;
                let change = &plan.changes[nodes[n].change];
                let step = nodes[n].step.clone();
                observer.started(&step, change);
                let op = operator.clone();
                let attrs = resolved_attrs(change, &ids);
                let id = change.id.clone();
                running.push(async move {
                    let started = Instant::now();
                    let result = run_step(&*op, &step, change, attrs, id).await;
                    (n, step, result, started.elapsed())
                });
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop, if !stopping => {
                stopping = true;
                outcome.interrupted = true;
            }
            Some((n, step, result, elapsed)) = running.next() => {
                let change = &plan.changes[nodes[n].change];
                match result {
                    Ok(new_id) => {
                        observer.finished(&step, change, Ok(new_id.as_deref()), elapsed);
                        match step.phase {
                            Phase::Create => {
                                if let Some(id) = new_id {
                                    ids.insert(step.address.clone(), id);
                                }
                            }
                            Phase::Delete => {
                                // A replacement made new-first has the new id by now.
                                if ids.get(&step.address) == change.id.as_ref() {
                                    ids.remove(&step.address);
                                }
                                if let Some(note) = new_id {
                                    outcome.notes.push(note);
                                }
                            }
                            Phase::Update => {}
                        }
                        state[n] = State::Done;
                        outcome.done.push((step, elapsed));
                    }
                    Err(StepError::Operator(e)) => {
                        observer.finished(&step, change, Err(&e.to_string()), elapsed);
                        state[n] = State::Failed;
                        outcome.failed.push((step, e));
                    }
                    Err(StepError::Unresolved(what)) => {
                        // Cannot happen when the graph is right; never call AWS with a guess.
                        observer.finished(&step, change, Err(&what), elapsed);
                        state[n] = State::Failed;
                        outcome.skipped.push(step);
                    }
                }
            }
        }
    }
    for (n, s) in state.iter().enumerate() {
        if *s == State::Waiting {
            outcome.skipped.push(nodes[n].step.clone());
        }
    }
    outcome.ids = ids;
    outcome
}

enum StepError<E> {
    Operator(E),
    Unresolved(String),
}

/// The change's attributes with ids of resources created so far filled in.
fn resolved_attrs(change: &Change, ids: &HashMap<Address, String>) -> Vec<AttrChange> {
    change
        .attrs
        .iter()
        .map(|a| AttrChange {
            after: resolve(&a.after, ids),
            ..a.clone()
        })
        .collect()
}

async fn run_step<O: Operator>(
    op: &O,
    step: &Step,
    change: &Change,
    attrs: Vec<AttrChange>,
    id: Option<String>,
) -> Result<Option<String>, StepError<O::Error>> {
    if step.phase != Phase::Delete
        && let Some(a) = attrs.iter().find(|a| has_pending(&a.after))
    {
        return Err(StepError::Unresolved(format!(
            "internal error: {} of {} refers to a resource that was not created",
            a.name, step.address
        )));
    }
    let live_id = || {
        id.as_deref().ok_or_else(|| {
            StepError::Unresolved(format!("internal error: {} has no id", step.address))
        })
    };
    match step.phase {
        Phase::Create => {
            let attrs = Attrs(
                attrs
                    .into_iter()
                    .map(|a| (a.name, a.after))
                    .collect::<BTreeMap<&'static str, Value>>(),
            );
            op.create(change, attrs)
                .await
                .map(Some)
                .map_err(StepError::Operator)
        }
        Phase::Update => op
            .update(change, live_id()?, attrs)
            .await
            .map(|()| None)
            .map_err(StepError::Operator),
        Phase::Delete => op
            .delete(change, live_id()?)
            .await
            .map_err(StepError::Operator),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::resources;
    use crate::model::Kind;
    use crate::plan::{destroy, reconcile};
    use crate::stack::Stack;
    use std::sync::Mutex;

    fn stack() -> Stack {
        crate::stack::test_stack("demo")
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake failure of {0}")]
    struct FakeError(String);

    /// Records calls; subnets meet at a barrier, so a sequential executor
    /// would never get past the first one.
    struct Fake {
        log: Mutex<Vec<String>>,
        subnet_barrier: tokio::sync::Barrier,
        fail: Option<Address>,
    }

    impl Fake {
        fn new(fail: Option<Address>) -> Arc<Self> {
            Self::with_subnets(3, fail)
        }
        /// Subnet creates meet at a barrier of `subnets`.
        fn with_subnets(subnets: usize, fail: Option<Address>) -> Arc<Self> {
            Arc::new(Fake {
                log: Mutex::new(Vec::new()),
                subnet_barrier: tokio::sync::Barrier::new(subnets),
                fail,
            })
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Operator for Fake {
        type Error = FakeError;
        async fn create(&self, change: &Change, attrs: Attrs) -> Result<String, FakeError> {
            if change.address.kind == Kind::Subnet {
                self.subnet_barrier.wait().await;
                assert!(
                    attrs.id("vpc").is_some(),
                    "vpc id resolved before the subnet is created"
                );
            }
            if self.fail.as_ref() == Some(&change.address) {
                return Err(FakeError(change.address.to_string()));
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("create {}", change.address));
            Ok(format!("id-of-{}", change.address))
        }
        async fn update(
            &self,
            change: &Change,
            id: &str,
            _: Vec<AttrChange>,
        ) -> Result<(), FakeError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("update {} {id}", change.address));
            Ok(())
        }
        async fn delete(&self, change: &Change, id: &str) -> Result<Option<String>, FakeError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("delete {} {id}", change.address));
            Ok(None)
        }
    }

    struct Quiet;
    impl Observer for Quiet {
        fn started(&self, _: &Step, _: &Change) {}
        fn finished(&self, _: &Step, _: &Change, _: Result<Option<&str>, &str>, _: Duration) {}
    }

    fn position(log: &[String], prefix: &str) -> usize {
        log.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not in {log:?}"))
    }

    #[tokio::test]
    async fn creates_in_dependency_order_and_subnets_concurrently() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let plan = reconcile("demo", "eu-central-1", &want, &[]).unwrap();
        let fake = Fake::new(None);
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            execute(&plan, fake.clone(), &Quiet, std::future::pending()),
        )
        .await
        .expect("subnets must be created concurrently, else the barrier never opens");
        assert!(outcome.succeeded());
        let log = fake.log();
        assert_eq!(log.len(), want.len());
        assert_eq!(position(&log, "create vpc.vpc"), 0);
        assert!(position(&log, "create route_table") > position(&log, "create subnet.public"));
        assert!(position(&log, "create route_table") > position(&log, "create internet_gateway"));
        assert!(
            position(&log, "create security_group.db")
                > position(&log, "create security_group.app")
        );
        assert_eq!(
            outcome.ids[&Address::new(Kind::Vpc, "vpc")],
            "id-of-vpc.vpc"
        );
    }

    #[tokio::test]
    async fn failure_skips_dependents_but_not_independent_work() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let plan = reconcile("demo", "eu-central-1", &want, &[]).unwrap();
        // Subnets would wait at the barrier forever if one failed, so fail the igw.
        let fake = Fake::new(Some(Address::new(Kind::InternetGateway, "igw")));
        let outcome = execute(&plan, fake.clone(), &Quiet, std::future::pending()).await;
        assert_eq!(outcome.failed.len(), 1);
        let skipped: Vec<Kind> = outcome.skipped.iter().map(|s| s.address.kind).collect();
        assert_eq!(
            skipped,
            [Kind::RouteTable, Kind::Instance, Kind::ElasticIp],
            "only the route table and the server's address need the gateway, and the server the route table"
        );
        assert!(
            fake.log()
                .contains(&"create database.postgres-db".to_string())
        );
        assert!(fake.log().contains(&"create security_group.db".to_string()));
    }

    #[tokio::test]
    async fn destroy_deletes_children_before_parents() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let live: Vec<_> = want
            .iter()
            .map(|d| crate::model::Observed {
                address: d.address.clone(),
                id: format!("live-{}", d.address),
                tags: d.tags.clone(),
                attrs: Default::default(),
            })
            .collect();
        let plan = destroy("demo", "eu-central-1", &want, &live).unwrap();
        let fake = Fake::new(None);
        let outcome = execute(&plan, fake.clone(), &Quiet, std::future::pending()).await;
        assert!(outcome.succeeded());
        let log = fake.log();
        let vpc = position(&log, "delete vpc.vpc");
        assert_eq!(vpc, log.len() - 1);
        assert!(
            position(&log, "delete security_group.app")
                > position(&log, "delete security_group.db")
        );
        assert!(position(&log, "delete internet_gateway") > position(&log, "delete route_table"));
        assert!(position(&log, "delete subnet.public") > position(&log, "delete route_table"));
    }

    #[tokio::test]
    async fn an_access_key_is_replaced_new_first_and_goes_once_its_parameters_have_the_new_one() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = crate::plan::converged(&want, |_, a| format!("live-{a}"));
        let key = live
            .iter_mut()
            .find(|o| o.address == crate::desired::access_key())
            .unwrap();
        // Its secret is known nowhere: of no use to the server.
        key.attrs.insert("secret_known", Value::Bool(false));
        for o in live
            .iter_mut()
            .filter(|o| o.address.kind == Kind::Parameter)
        {
            if o.address.role != "database-url" {
                o.attrs.insert("value", Value::Sensitive("old".into()));
            }
        }
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        let fake = Fake::with_subnets(1, None);
        let outcome = execute(&plan, fake.clone(), &Quiet, std::future::pending()).await;
        assert!(outcome.succeeded());
        let mut log = fake.log();
        // The two parameters' updates run side by side: their order is free.
        log[1..3].sort();
        assert_eq!(
            log,
            [
                "create access_key.s3-user-key",
                "update parameter.s3-key-id live-parameter.s3-key-id",
                "update parameter.s3-secret-key live-parameter.s3-secret-key",
                "delete access_key.s3-user-key live-access_key.s3-user-key",
            ]
        );
        assert_eq!(
            outcome.ids[&crate::desired::access_key()],
            "id-of-access_key.s3-user-key",
            "the new key's id stays once the old one is gone"
        );
    }

    #[tokio::test]
    async fn replacement_deletes_then_creates_with_new_references() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let mut live = crate::plan::converged(&want, |_, a| format!("live-{a}"));
        live[2]
            .attrs
            .insert("cidr_block", Value::Text("10.0.9.0/24".into()));
        let plan = reconcile("demo", "eu-central-1", &want, &live).unwrap();
        // Subnet creates meet at a barrier of three; here only one is created.
        let fake = Fake::with_subnets(1, None);
        let outcome = execute(&plan, fake.clone(), &Quiet, std::future::pending()).await;
        assert!(outcome.succeeded());
        let log = fake.log();
        assert_eq!(
            log,
            [
                // The server lives in the subnet: it goes first and comes back last.
                "delete instance.app live-instance.app",
                "delete subnet.public live-subnet.public",
                "create subnet.public",
                "update route_table.public-rt live-route_table.public-rt",
                "create instance.app",
                // The address stays, and moves to the new server.
                "update elastic_ip.app-ip live-elastic_ip.app-ip",
            ]
        );
    }

    #[tokio::test]
    async fn stop_lets_running_steps_finish_and_starts_nothing_new() {
        let want = resources(&stack(), &crate::desired::test_facts());
        let plan = reconcile("demo", "eu-central-1", &want, &[]).unwrap();
        let fake = Fake::new(None);
        let outcome = execute(&plan, fake.clone(), &Quiet, std::future::ready(())).await;
        assert!(outcome.interrupted);
        assert!(!outcome.succeeded());
        // What needs nothing was started before the stop was seen, and
        // finished; nothing that waited for it ran.
        let mut log = fake.log();
        log.sort();
        assert_eq!(
            log,
            [
                "create bucket.storage",
                "create iam_policy.cloudwatch-logs",
                "create iam_policy.s3-access",
                "create iam_policy.ssm-read",
                "create log_group.logs",
                "create vpc.vpc",
            ]
        );
        assert_eq!(outcome.skipped.len(), want.len() - 6);
    }
}
