//! Crashes, faults and two people at once: kill -9 at exact calls, AWS
//! faults on a seeded tenth of the calls, errors that won't pass, and the
//! stack's lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Emulator, Needs, Output, Project, bare_stack_yaml};
use crate::network::tagged;
use crate::proxy::{Options, Proxy, Request, Stage};

const REGION: &str = "eu-central-1";

/// Whether the stack's lock (a log group) exists.
pub async fn locked(emulator: &Emulator, prefix: &str) -> bool {
    let name = format!("/ihp-infra/locks/{prefix}");
    emulator
        .logs(REGION)
        .await
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .unwrap()
        .log_groups()
        .iter()
        .any(|g| g.log_group_name() == Some(name.as_str()))
}

/// Everything in the account (this region, IAM, S3) that is not AWS's own
/// default and does not carry the stack's tag: what a crash could orphan.
/// Found by listing and judged by tag alone, never by name: a resource made
/// without its tag is an orphan.
pub async fn orphans(emulator: &Emulator, prefix: &str) -> Vec<String> {
    let ec2 = emulator.ec2(REGION).await;
    let ours = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter()
            .any(|t| t.key() == Some("ihp-infra:stack") && t.value() == Some(prefix))
    };
    let mut found = Vec::new();
    let vpcs = ec2.describe_vpcs().send().await.unwrap();
    let default_vpcs: Vec<&str> = vpcs
        .vpcs()
        .iter()
        .filter(|v| v.is_default() == Some(true))
        .filter_map(|v| v.vpc_id())
        .collect();
    for v in vpcs.vpcs() {
        if v.is_default() != Some(true) && !ours(v.tags()) {
            found.push(format!("vpc {:?}", v.vpc_id()));
        }
    }
    let not_default = |vpc: Option<&str>| !vpc.is_some_and(|v| default_vpcs.contains(&v));
    for a in ec2.describe_addresses().send().await.unwrap().addresses() {
        if !ours(a.tags()) {
            found.push(format!("elastic IP {:?}", a.allocation_id()));
        }
    }
    for s in ec2.describe_subnets().send().await.unwrap().subnets() {
        if not_default(s.vpc_id()) && !ours(s.tags()) {
            found.push(format!("subnet {:?}", s.subnet_id()));
        }
    }
    for g in ec2
        .describe_internet_gateways()
        .send()
        .await
        .unwrap()
        .internet_gateways()
    {
        let in_default = g.attachments().iter().any(|a| !not_default(a.vpc_id()));
        if !in_default && !ours(g.tags()) {
            found.push(format!("internet gateway {:?}", g.internet_gateway_id()));
        }
    }
    for r in ec2
        .describe_route_tables()
        .send()
        .await
        .unwrap()
        .route_tables()
    {
        let main = r.associations().iter().any(|a| a.main() == Some(true));
        if not_default(r.vpc_id()) && !main && !ours(r.tags()) {
            found.push(format!("route table {:?}", r.route_table_id()));
        }
    }
    for g in ec2
        .describe_security_groups()
        .send()
        .await
        .unwrap()
        .security_groups()
    {
        if g.group_name() != Some("default") && !ours(g.tags()) {
            found.push(format!("security group {:?}", g.group_id()));
        }
    }
    for r in ec2
        .describe_instances()
        .send()
        .await
        .unwrap()
        .reservations()
    {
        for i in r.instances() {
            let gone = i
                .state()
                .and_then(|s| s.name())
                .is_some_and(|n| n.as_str() == "terminated");
            if !gone && !ours(i.tags()) {
                found.push(format!("instance {:?}", i.instance_id()));
            }
        }
    }
    for v in ec2.describe_volumes().send().await.unwrap().volumes() {
        if !ours(v.tags()) {
            found.push(format!("volume {:?}", v.volume_id()));
        }
    }
    if emulator.has(Needs::Rds) {
        let rds = emulator.rds(REGION).await;
        for d in rds
            .describe_db_instances()
            .send()
            .await
            .unwrap()
            .db_instances()
        {
            let tagged = d
                .tag_list()
                .iter()
                .any(|t| t.key() == Some("ihp-infra:stack") && t.value() == Some(prefix));
            if !tagged {
                found.push(format!("database {:?}", d.db_instance_identifier()));
            }
        }
        for g in rds
            .describe_db_subnet_groups()
            .send()
            .await
            .unwrap()
            .db_subnet_groups()
        {
            let tags = rds
                .list_tags_for_resource()
                .resource_name(g.db_subnet_group_arn().unwrap_or_default())
                .send()
                .await
                .unwrap();
            if !tags
                .tag_list()
                .iter()
                .any(|t| t.key() == Some("ihp-infra:stack") && t.value() == Some(prefix))
            {
                found.push(format!("db subnet group {:?}", g.db_subnet_group_name()));
            }
        }
    }
    let s3 = emulator.s3(REGION).await;
    for b in s3.list_buckets().send().await.unwrap().buckets() {
        let name = b.name().unwrap_or_default();
        let tagged = s3
            .get_bucket_tagging()
            .bucket(name)
            .send()
            .await
            .is_ok_and(|t| {
                t.tag_set()
                    .iter()
                    .any(|t| t.key() == "ihp-infra:stack" && t.value() == prefix)
            });
        if !tagged {
            found.push(format!("bucket {name}"));
        }
    }
    let logs = emulator.logs(REGION).await;
    for g in logs
        .describe_log_groups()
        .send()
        .await
        .unwrap()
        .log_groups()
    {
        let name = g.log_group_name().unwrap_or_default();
        if name.starts_with("/ihp-infra/locks/") {
            continue; // a lock carries no stack tag on purpose
        }
        if emulator.log_group_stack(REGION, name).await.as_deref() != Some(prefix) {
            found.push(format!("log group {name}"));
        }
    }
    let iam = emulator.iam().await;
    for r in iam.list_roles().send().await.unwrap().roles() {
        let tags = iam
            .list_role_tags()
            .role_name(r.role_name())
            .send()
            .await
            .unwrap();
        if !tags
            .tags()
            .iter()
            .any(|t| t.key() == "ihp-infra:stack" && t.value() == prefix)
        {
            found.push(format!("role {}", r.role_name()));
        }
    }
    for p in iam
        .list_policies()
        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
        .send()
        .await
        .unwrap()
        .policies()
    {
        let name = p.policy_name().unwrap_or_default();
        let tags = iam
            .list_policy_tags()
            .policy_arn(p.arn().unwrap_or_default())
            .send()
            .await
            .unwrap();
        if !tags
            .tags()
            .iter()
            .any(|t| t.key() == "ihp-infra:stack" && t.value() == prefix)
        {
            found.push(format!("policy {name}"));
        }
    }
    for p in iam
        .list_instance_profiles()
        .send()
        .await
        .unwrap()
        .instance_profiles()
    {
        // GetInstanceProfile has the tags (moto has no ListInstanceProfileTags).
        let got = iam
            .get_instance_profile()
            .instance_profile_name(p.instance_profile_name())
            .send()
            .await
            .unwrap();
        if !got.instance_profile().is_some_and(|p| {
            p.tags()
                .iter()
                .any(|t| t.key() == "ihp-infra:stack" && t.value() == prefix)
        }) {
            found.push(format!("instance profile {}", p.instance_profile_name()));
        }
    }
    found.sort();
    found
}

/// A proxy that kills the command it runs (kill -9) when the command's
/// `at`-th request reaches `stage`, counting from that run's first. One
/// proxy serves several runs (and their reruns, through `endpoint`); it can
/// answer RunInstances by ClientToken as AWS does (`Options::client_tokens`).
struct Killer {
    proxy: Proxy,
    pid: Arc<AtomicU32>,
    at: Arc<Mutex<(usize, Stage)>>,
}

impl Killer {
    fn start(emulator: &Emulator, client_tokens: bool) -> Killer {
        let pid = Arc::new(AtomicU32::new(0));
        let at = Arc::new(Mutex::new((usize::MAX, Stage::Received)));
        let (kill, when) = (pid.clone(), at.clone());
        let proxy = Proxy::start(
            emulator.port,
            Options {
                client_tokens,
                hook: Some(Arc::new(move |r: &Request, s: Stage| {
                    if (r.number, s) == *when.lock().unwrap() {
                        let pid = kill.load(Ordering::SeqCst);
                        if pid != 0 {
                            // SAFETY: a signal to the child under test.
                            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        }
                    }
                })),
                ..Options::default()
            },
        );
        Killer { proxy, pid, at }
    }

    /// Runs `args`, killed at its `at`-th request (never, for usize::MAX);
    /// returns how many requests the run made and whether it was killed.
    fn run(&self, p: &Project, args: &[&str], at: usize, stage: Stage) -> (usize, bool) {
        let before = self.proxy.requests();
        *self.at.lock().unwrap() = (before.saturating_add(at), stage);
        let mut child = p
            .command(args)
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.pid.store(child.id(), Ordering::SeqCst);
        let status = child.wait().unwrap();
        self.pid.store(0, Ordering::SeqCst);
        use std::os::unix::process::ExitStatusExt;
        (
            self.proxy.requests() - before,
            status.signal() == Some(libc::SIGKILL),
        )
    }
}

/// Runs a command through a proxy of its own, killed by it at `at`; returns
/// how many requests the proxy saw, and whether the process was killed.
fn run_killed(
    p: &Project,
    emulator: &Emulator,
    args: &[&str],
    at: usize,
    stage: Stage,
) -> (usize, bool) {
    Killer::start(emulator, false).run(p, args, at, stage)
}

#[tokio::test]
async fn killed_at_exact_calls_a_rerun_converges_with_nothing_orphaned() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("crash", REGION);

    // How many calls a whole apply and destroy make (kill point beyond the end).
    let (apply_calls, _) = run_killed(
        &p,
        &emulator,
        &["apply", "--auto-approve"],
        usize::MAX,
        Stage::Received,
    );
    assert_eq!(
        tagged(&emulator, "crash").await.len(),
        emulator.stack_size()
    );
    let (destroy_calls, _) = run_killed(
        &p,
        &emulator,
        &["destroy", "--auto-approve"],
        usize::MAX,
        Stage::Received,
    );
    assert!(tagged(&emulator, "crash").await.is_empty());
    assert!(
        apply_calls > 30 && destroy_calls > 30,
        "{apply_calls} {destroy_calls}"
    );

    // Kill points spread over each run; before a call reaches AWS, and after
    // AWS did it but before the answer arrives (the harder case).
    let points = 12;
    for i in 0..points {
        let stage = if i % 2 == 0 {
            Stage::Received
        } else {
            Stage::Answered
        };
        let at = 1 + i * apply_calls / points;
        let (_, killed) = run_killed(&p, &emulator, &["apply", "--auto-approve"], at, stage);
        assert!(killed, "apply was killed at call {at}");
        let rerun = p.run(&["apply", "--auto-approve"]);
        assert_eq!(
            rerun.code, 0,
            "apply killed at call {at} ({stage:?}), rerun: {rerun:?}"
        );
        let live = tagged(&emulator, "crash").await;
        assert_eq!(
            live.len(),
            emulator.stack_size(),
            "killed at {at} ({stage:?}): {live:?}"
        );
        assert_eq!(
            orphans(&emulator, "crash").await,
            Vec::<String>::new(),
            "killed at {at}"
        );

        let at = 1 + i * destroy_calls / points;
        let (_, killed) = run_killed(&p, &emulator, &["destroy", "--auto-approve"], at, stage);
        assert!(killed, "destroy was killed at call {at}");
        let rerun = p.run(&["destroy", "--auto-approve"]);
        assert_eq!(
            rerun.code, 0,
            "destroy killed at call {at} ({stage:?}), rerun: {rerun:?}"
        );
        assert!(
            tagged(&emulator, "crash").await.is_empty(),
            "destroy killed at {at}"
        );
        assert_eq!(
            orphans(&emulator, "crash").await,
            Vec::<String>::new(),
            "destroy killed at {at}"
        );
        assert!(!locked(&emulator, "crash").await);
    }
}

/// kill -9 inside an update round, not only while creating from empty or
/// deleting from full: a password change, a new instance type, a renamed
/// bucket and a replaced database at once. Wherever it died, the rerun
/// converges to one of each with nothing orphaned.
#[tokio::test]
async fn killed_inside_an_update_round_a_rerun_converges() {
    let Some(emulator) = Emulator::start_for(crate::common::FULL_STACK) else {
        return;
    };
    emulator.ec2_with_key(REGION).await;
    let p = Project::new(&emulator.endpoint());
    let base = crate::common::stack_yaml("upd", REGION);
    let changed = base.replace(crate::common::PASSWORD, "An0ther-secret-pw")
        + "instance:\n  type: t3.large\n\
           storage:\n  bucket: upd-renamed\n\
           database:\n  username: other_owner\n";
    let apply = ["apply", "--auto-approve", "--replace-database"];
    p.write("stack.yaml", &base);
    p.run_ok(&apply, 0);
    // One proxy for the killed run and its rerun: it answers a resent
    // RunInstances by its ClientToken as AWS does (moto ignores it).
    let killer = Killer::start(&emulator, true);
    // How many calls the round makes, then back to the base.
    p.write("stack.yaml", &changed);
    let (calls, killed) = killer.run(&p, &apply, usize::MAX, Stage::Received);
    assert!(!killed && calls > 20, "{calls}");
    p.write("stack.yaml", &base);
    p.run_ok(&apply, 0);

    let points = 6;
    for i in 0..points {
        let stage = if i % 2 == 0 {
            Stage::Received
        } else {
            Stage::Answered
        };
        let at = 1 + i * calls / points;
        p.write("stack.yaml", &changed);
        let (_, killed) = killer.run(&p, &apply, at, stage);
        assert!(killed, "killed at call {at} of the round");
        let rerun = p.run_at(&killer.proxy.endpoint(), &apply);
        assert_eq!(
            rerun.code, 0,
            "killed at {at} ({stage:?}), rerun: {rerun:?}"
        );
        let plan = p.run_at(&killer.proxy.endpoint(), &["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "killed at {at} ({stage:?}): {plan:?}");
        let live = tagged(&emulator, "upd").await;
        assert_eq!(
            live.len(),
            emulator.stack_size(),
            "killed at {at} ({stage:?}): {live:?}"
        );
        assert!(live.contains(&"bucket upd-renamed".to_string()), "{live:?}");
        assert_eq!(
            orphans(&emulator, "upd").await,
            Vec::<String>::new(),
            "killed at {at} ({stage:?})"
        );
        assert!(!locked(&emulator, "upd").await);
        p.write("stack.yaml", &base);
        p.run_ok(&apply, 0);
    }
    p.run_ok(&["destroy", "--auto-approve", "--skip-final-snapshot"], 0);
}

#[tokio::test]
async fn transient_faults_are_survived_and_reported_at_v() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("flaky", REGION);
    let mut total = 0;
    for seed in [7u64, 8, 9] {
        let proxy = Proxy::start(
            emulator.port,
            Options {
                faults: Some((seed, 0.1)),
                ..Options::default()
            },
        );
        for (args, code) in [
            (&["plan", "-v", "--detailed-exitcode"][..], 2),
            (&["apply", "--auto-approve", "-v"], 0),
            (&["plan", "-v", "--detailed-exitcode"], 0),
            (&["destroy", "--auto-approve", "-v"], 0),
        ] {
            let before = proxy.injected().len();
            let out = p.run_at(&proxy.endpoint(), args);
            let stderr = &out.stderr;
            assert_eq!(
                Some(out.code),
                Some(code),
                "seed {seed}, {args:?}, faults {:?}:\n{stderr}",
                &proxy.injected()[before..]
            );
            // Without RDS (LocalStack community) its calls fail anyway and
            // the stack wants none: a fault there may end in no retry.
            let faults: Vec<_> = proxy.injected()[before..]
                .iter()
                .filter(|(r, _)| r.service != "rds" || emulator.has(Needs::Rds))
                .cloned()
                .collect();
            if !faults.is_empty() {
                assert!(
                    stderr.contains("survived faults"),
                    "seed {seed}, {args:?}: faults not reported: {faults:?}\n{stderr}"
                );
            }
        }
        assert!(tagged(&emulator, "flaky").await.is_empty());
        total += proxy.injected().len();
    }
    assert!(total >= 20, "the faults were injected: {total}");
}

/// A bad link (issue 14): on every attempt of every call, 10% answered
/// 503, 5% throttled and 3% of connections dropped after the request was
/// read, so some calls draw three or more faults in a row. Each of 20 seeds
/// runs apply, plan (no changes) and destroy of a stack of its own; all
/// converge, leaving nothing and no lock. The cost in time is printed
/// (`--nocapture`), not asserted: bench/ measures, tests check.
#[test]
fn a_bad_link_makes_runs_longer_never_failed() {
    use crate::proxy::Link;
    use std::time::Instant;
    const SEEDS: u64 = 20;
    const AT_ONCE: u64 = 10;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = Emulator::start();
    runtime.block_on(emulator.ec2_with_key(REGION));
    let run = |p: &Project, endpoint: &str, args: &[&str], code: i32, what: &str| {
        let started = Instant::now();
        let out = p.run_at(endpoint, args);
        assert_eq!(out.code, code, "{what} {args:?}: {out:?}");
        started.elapsed()
    };
    // Without faults, for comparison.
    let clean = emulator.project("link-clean", REGION);
    let clean_apply = run(
        &clean,
        &emulator.endpoint(),
        &["apply", "--auto-approve"],
        0,
        "clean",
    );
    run(
        &clean,
        &emulator.endpoint(),
        &["destroy", "--auto-approve"],
        0,
        "clean",
    );

    let link = Link {
        unavailable: 0.10,
        throttle: 0.05,
        drop: 0.03,
    };
    let results: Mutex<Vec<(u64, Duration, usize)>> = Mutex::default();
    for wave in 0..SEEDS.div_ceil(AT_ONCE) {
        std::thread::scope(|scope| {
            for seed in wave * AT_ONCE..((wave + 1) * AT_ONCE).min(SEEDS) {
                let (emulator, results, run) = (&emulator, &results, &run);
                scope.spawn(move || {
                    let prefix = format!("link-{seed:02}");
                    let proxy = Proxy::start(
                        emulator.port,
                        Options {
                            link: Some((seed, link)),
                            ..Options::default()
                        },
                    );
                    let p = emulator.project(&prefix, REGION);
                    let what = format!("seed {seed}");
                    let apply = run(
                        &p,
                        &proxy.endpoint(),
                        &["apply", "--auto-approve"],
                        0,
                        &what,
                    );
                    let plan = p.run_at(&proxy.endpoint(), &["plan", "--detailed-exitcode"]);
                    assert_eq!(plan.code, 0, "{what}: no changes after apply: {plan:?}");
                    run(
                        &p,
                        &proxy.endpoint(),
                        &["destroy", "--auto-approve"],
                        0,
                        &what,
                    );
                    results
                        .lock()
                        .unwrap()
                        .push((seed, apply, proxy.injected().len()));
                });
            }
        });
    }
    runtime.block_on(async {
        for seed in 0..SEEDS {
            let prefix = format!("link-{seed:02}");
            assert!(tagged(&emulator, &prefix).await.is_empty(), "{prefix}");
            assert!(!locked(&emulator, &prefix).await, "{prefix}: lock left");
        }
        // Nothing of any of the stacks, tagged or not.
        assert_eq!(orphans(&emulator, "link-none").await, Vec::<String>::new());
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), SEEDS as usize);
    let faults: usize = results.iter().map(|r| r.2).sum();
    assert!(
        faults >= 20 * SEEDS as usize,
        "the link spoiled calls: {faults}"
    );
    let longest = results.iter().map(|r| r.1).max().unwrap();
    let mean = results.iter().map(|r| r.1).sum::<Duration>() / SEEDS as u32;
    eprintln!(
        "bad link: {} of {SEEDS} seeds converged (apply, plan, destroy); {faults} faults; \
         apply without faults {clean_apply:.1?}, with: mean {mean:.1?}, longest {longest:.1?}",
        results.len()
    );
}

#[tokio::test]
async fn aws_max_attempts_and_the_profiles_max_attempts_still_set_the_budget() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("budget", REGION);
    let proxy = Proxy::start(
        emulator.port,
        Options {
            unavailable: ["DescribeVpcs".to_string()].into(),
            ..Options::default()
        },
    );
    let sent = || {
        proxy
            .received()
            .iter()
            .filter(|op| *op == "DescribeVpcs")
            .count()
    };
    let out: Output = p
        .command(&["plan"])
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("AWS_MAX_ATTEMPTS", "2")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(sent(), 2, "AWS_MAX_ATTEMPTS=2: {out:?}");
    // The profile in use (the default one here) says 4.
    std::fs::create_dir_all(p.dir.path().join(".aws")).unwrap();
    p.write(".aws/config", "[default]\nmax_attempts = 4\n");
    let out = p.run_at(&proxy.endpoint(), &["plan"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(sent(), 2 + 4, "max_attempts = 4 in the profile: {out:?}");
    assert!(
        out.stderr.contains("Unavailable: Service is unavailable"),
        "{out:?}"
    );
}

#[tokio::test]
async fn lock_release_goes_on_after_the_sdks_attempts_are_spent() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("release", REGION);
    // One attempt per call, and the release's first answer is a 500: the
    // SDK gives up at once, the release must not.
    let proxy = Proxy::start(
        emulator.port,
        Options {
            fail_first: ["DeleteLogGroup".to_string()].into(),
            ..Options::default()
        },
    );
    let out: Output = p
        .command(&["apply", "--auto-approve"])
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        proxy
            .received()
            .iter()
            .filter(|op| *op == "DeleteLogGroup (lock)")
            .count(),
        2,
        "{out:?}"
    );
    assert!(!out.stderr.contains("failed to release"), "{out:?}");
    assert!(!locked(&emulator, "release").await);
    p.run_ok(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn errors_that_wont_pass_stop_at_once_and_the_next_run_converges() {
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("denied", REGION);
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counted = calls.clone();
    let proxy = Proxy::start(
        emulator.port,
        Options {
            deny: HashMap::from([
                ("RunInstances".to_string(), "UnauthorizedOperation"),
                ("CreateDBInstance".to_string(), "InstanceQuotaExceeded"),
                ("S3 PUT /denied-storage/".to_string(), "InvalidBucketName"),
            ]),
            hook: Some(Arc::new(move |r: &Request, s: Stage| {
                if s == Stage::Received {
                    *counted
                        .lock()
                        .unwrap()
                        .entry(r.operation.clone())
                        .or_default() += 1;
                }
            })),
            ..Options::default()
        },
    );
    let out = p.run_at(&proxy.endpoint(), &["apply", "--auto-approve"]);
    let stderr = &out.stderr;
    assert_eq!(out.code, 1, "{stderr}");
    // The server and database only where the emulator's stack has them.
    let denied: Vec<(&str, &str, &str)> = [
        ("instance.app", "RunInstances", "UnauthorizedOperation"),
        (
            "database.postgres-db",
            "CreateDBInstance",
            "InstanceQuotaExceeded",
        ),
        (
            "bucket.storage",
            "S3 PUT /denied-storage/",
            "InvalidBucketName",
        ),
    ]
    .into_iter()
    .filter(|(resource, _, _)| emulator.serves_whole_stack() || *resource == "bucket.storage")
    .collect();
    for (resource, _, code) in &denied {
        assert!(
            stderr.contains(&format!("failed to create {resource}"))
                && stderr.contains(&format!("{code}: denied by the test proxy")),
            "{resource}: {stderr}"
        );
    }
    if emulator.serves_whole_stack() {
        assert!(
            stderr.contains("hint: the credentials in use lack a permission"),
            "{stderr}"
        );
        assert!(stderr.contains("hint: an AWS quota is reached"), "{stderr}");
    }
    let calls = calls.lock().unwrap().clone();
    for (_, op, _) in &denied {
        assert_eq!(calls.get(*op), Some(&1), "{op} is not retried: {calls:?}");
    }
    // What could be made was made, and tagged; the next run finishes.
    let made = tagged(&emulator, "denied").await.len();
    assert!((5..emulator.stack_size()).contains(&made), "{made}");
    assert!(!locked(&emulator, "denied").await);
    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(
        tagged(&emulator, "denied").await.len(),
        emulator.stack_size()
    );
    assert_eq!(orphans(&emulator, "denied").await, Vec::<String>::new());
}

#[tokio::test]
async fn second_apply_refuses_or_waits_while_the_first_holds_the_lock() {
    // The lock is all this is about: a stack every emulator serves.
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &bare_stack_yaml("two", REGION));
    // The first apply takes the lock, then hears nothing back until the
    // waiting apply below says it waits: the order is made by events, not
    // by how fast this machine is (regression: under load the first apply
    // ran ahead, and the plan below met its bucket half-made, which moto
    // tags only after creating it).
    let release = Arc::new(AtomicBool::new(false));
    let released = release.clone();
    let proxy = Proxy::start(
        emulator.port,
        Options {
            delay: Duration::from_millis(100),
            hook: Some(Arc::new(move |r: &Request, s: Stage| {
                // The first log group is the lock; the stack's own comes
                // after the release.
                if s == Stage::Answered && r.operation == "CreateLogGroup" {
                    // Bounded: a waiting apply that never says so fails below.
                    let until = std::time::Instant::now() + Duration::from_secs(120);
                    while !released.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })),
            ..Options::default()
        },
    );
    let mut first = p
        .command(&["apply", "--auto-approve"])
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !locked(&emulator, "two").await {
        assert!(
            std::time::Instant::now() < deadline,
            "the first apply never locked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = p.run_ok(&["apply", "--auto-approve"], 1);
    assert!(
        second
            .stderr
            .contains("stack two is locked: `ihp-infra apply` of ")
            && second.stderr.contains(&format!("(pid {})", first.id()))
            && second.stderr.contains(" is running since 20"),
        "{second:?}"
    );
    assert!(second.stderr.contains("--lock-timeout"), "{second:?}");
    // plan reads only: it never waits for the lock.
    p.run_ok(&["plan"], 0);
    // Waiting works: this one starts when the first is done, which is let
    // go once this one says it waits.
    let mut waiting = p
        .command(&["apply", "--auto-approve", "--lock-timeout", "2m", "-v"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = waiting.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.contains("waiting for the lock") {
                release.store(true, Ordering::SeqCst);
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let status = waiting.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("waiting for the lock"), "{log}");
    assert!(first.wait().unwrap().success());
    assert_eq!(tagged(&emulator, "two").await.len(), 18);
    assert!(!locked(&emulator, "two").await, "released at the end");
}

#[tokio::test]
async fn two_runs_taking_over_a_dead_runs_lock_never_hold_it_at_once() {
    // Both find the lock of a run on this machine that was killed. Before
    // the takeover guard, both deleted it: the later delete removed the lock
    // the other run had just taken, and both applied at once. The second
    // lock delete is held back until a lock was taken, to open that window
    // every time.
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &bare_stack_yaml("race", REGION));
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    emulator
        .logs(REGION)
        .await
        .create_log_group()
        .log_group_name("/ihp-infra/locks/race")
        .tags("ihp-infra:lock", "race")
        .tags("ihp-infra:holder", format!("{user}@{host}"))
        .tags("ihp-infra:pid", dead.to_string())
        .tags("ihp-infra:command", "apply")
        .send()
        .await
        .unwrap();
    let deletes = Arc::new(AtomicU32::new(0));
    let counted = deletes.clone();
    // The second lock delete waits until a run has taken the lock (a
    // CreateLogGroup answered 200): were it a second takeover, it would
    // then remove the lock just taken. An event, not a clock; 60 s is only
    // a safety net against a hang.
    let taken = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let proxy = Proxy::start(
        emulator.port,
        Options {
            hook: Some(Arc::new(move |r: &Request, s: Stage| {
                let (flag, changed) = &*taken;
                if s == Stage::Answered && r.operation == "CreateLogGroup" && r.status == 200 {
                    *flag.lock().unwrap() = true;
                    changed.notify_all();
                }
                if s == Stage::Received
                    && r.operation == "DeleteLogGroup"
                    && counted.fetch_add(1, Ordering::SeqCst) == 1
                {
                    let held = flag.lock().unwrap();
                    let _ = changed
                        .wait_timeout_while(held, Duration::from_secs(60), |taken| !*taken)
                        .unwrap();
                }
            })),
            ..Options::default()
        },
    );
    let runs: Vec<_> = (0..2)
        .map(|_| {
            p.command(&["apply", "--auto-approve", "--lock-timeout", "2m", "-v"])
                .env("AWS_ENDPOINT_URL", proxy.endpoint())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut held = Vec::new();
    for run in runs {
        let out: Output = run.wait_with_output().unwrap().into();
        let stderr = out.stderr;
        assert_eq!(out.code, 0, "{stderr}");
        // The log's RFC 3339 UTC timestamps compare as text.
        let at = |what: &str| {
            stderr
                .lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {what:?} in:\n{stderr}"))
                .to_string()
        };
        held.push((at("lock taken"), at("lock released"), stderr));
    }
    held.sort();
    let (first, second) = (&held[0], &held[1]);
    assert!(
        first.1 <= second.0,
        "both held the lock at once: {} to {} and {} to {}\n{}\n{}",
        first.0,
        first.1,
        second.0,
        second.1,
        first.2,
        second.2
    );
    assert!(
        held.iter().any(|h| h
            .2
            .contains("took over the lock of a run on this machine that is gone")),
        "{held:?}"
    );
    // One takeover of the dead run's lock and two releases. Without the
    // guard the second run deletes the dead lock too (a fourth delete, the
    // one held back, which then removes the lock the first run just took).
    assert_eq!(
        deletes.load(Ordering::SeqCst),
        3,
        "one takeover, two releases"
    );
    assert_eq!(tagged(&emulator, "race").await.len(), 18);
    let left = emulator
        .logs(REGION)
        .await
        .describe_log_groups()
        .log_group_name_prefix("/ihp-infra/locks/race")
        .send()
        .await
        .unwrap();
    assert_eq!(left.log_groups().len(), 0, "{left:?}");
    p.run_ok(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn lock_left_by_a_lost_machine_is_broken_with_unlock() {
    // The lock is all this is about: a stack every emulator serves.
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &bare_stack_yaml("stale", REGION));
    emulator
        .logs(REGION)
        .await
        .create_log_group()
        .log_group_name("/ihp-infra/locks/stale")
        .tags("ihp-infra:lock", "stale")
        .tags("ihp-infra:holder", "ana@lost-laptop")
        .tags("ihp-infra:pid", "4242")
        .tags("ihp-infra:command", "destroy")
        .send()
        .await
        .unwrap();
    let out = p.run_ok(&["apply", "--auto-approve"], 1);
    assert!(
        out.stderr
            .contains("`ihp-infra destroy` of ana@lost-laptop (pid 4242) is running since"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("break the lock with `ihp-infra unlock`"),
        "{out:?}"
    );
    assert!(tagged(&emulator, "stale").await.is_empty(), "nothing done");

    let out = p.run_ok(&["unlock"], 1);
    assert!(out.stderr.contains("pass --force"), "{out:?}");
    assert!(locked(&emulator, "stale").await);
    let out = p.run_ok(&["unlock", "--force"], 0);
    assert!(out.stderr.contains("lock of stack stale broken"), "{out:?}");
    assert!(!locked(&emulator, "stale").await);
    let out = p.run_ok(&["unlock", "--force"], 0);
    assert!(out.stderr.contains("is not locked"), "{out:?}");

    p.run_ok(&["apply", "--auto-approve"], 0);
    assert_eq!(tagged(&emulator, "stale").await.len(), 18);
    // The lock group is no resource of the stack: destroy leaves no lock.
    p.run_ok(&["destroy", "--auto-approve"], 0);
    assert!(!locked(&emulator, "stale").await);
}

#[tokio::test]
async fn ec2_create_sent_again_by_ihp_infra_is_reported_as_a_survived_fault() {
    // Regression: EC2's token-less creates are sent again by ihp-infra, not
    // the SDK (see lost_answers_of_creates_never_make_duplicates), and those
    // resends were missing from -v's "survived faults".
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("resent", REGION);
    let proxy = Proxy::start(
        emulator.port,
        Options {
            fail_first: ["CreateInternetGateway".to_string()].into(),
            ..Options::default()
        },
    );
    let out = p.run_at(&proxy.endpoint(), &["apply", "--auto-approve", "-v"]);
    let stderr = &out.stderr;
    assert_eq!(out.code, 0, "{stderr}");
    assert_eq!(proxy.injected().len(), 1, "{:?}", proxy.injected());
    assert!(
        stderr.contains("create not done (fault); sending it again"),
        "{stderr}"
    );
    assert!(stderr.contains("survived faults"), "{stderr}");
    assert!(stderr.contains("retried=1"), "{stderr}");
    let gateways = tagged(&emulator, "resent")
        .await
        .into_iter()
        .filter(|id| id.starts_with("igw-"))
        .count();
    assert_eq!(gateways, 1);
    p.run_ok(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn sdk_retries_follow_aws_max_attempts() {
    // The README tells a throttled account to raise AWS_MAX_ATTEMPTS: the
    // SDK's own setting, read by aws-config. At 1, a single 500 fails.
    let emulator = Emulator::start();
    let p = Project::new(&emulator.endpoint());
    p.write("stack.yaml", &bare_stack_yaml("attempts", REGION));
    for (attempts, code) in [("1", 1), ("2", 0)] {
        let proxy = Proxy::start(
            emulator.port,
            Options {
                fail_first: ["CreatePolicy".to_string()].into(),
                ..Options::default()
            },
        );
        let out: Output = p
            .command(&["apply", "--auto-approve", "-v"])
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("AWS_MAX_ATTEMPTS", attempts)
            .output()
            .unwrap()
            .into();
        let stderr = &out.stderr;
        assert_eq!(out.code, code, "{attempts}: {stderr}");
        assert_eq!(proxy.injected().len(), 1);
        if code == 1 {
            assert!(stderr.contains("InternalError"), "{stderr}");
        }
    }
    p.run_ok(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn lost_answers_of_every_write_are_taken_as_done() {
    // AWS did it, the answer never came, the SDK sent it again: the second
    // answer is "already" (InvalidPermission.Duplicate, RouteAlreadyExists,
    // Resource.AlreadyAssociated, NotFound on a delete, ...). Every write of
    // an apply, an apply that changes things and a destroy loses its first
    // answer once.
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    // With the IAM user and its key (and its local file): every kind the
    // stack can have.
    let first = |prefix: &str| {
        let yaml = emulator.stack_yaml(prefix, REGION);
        format!("{yaml}storage:\n  access_key: true\n  key_file: true\n")
    };
    let changed = |prefix: &str| {
        let mut yaml = emulator.stack_yaml(prefix, REGION);
        yaml.push_str(
            "tags:\n  team: web\nstorage:\n  access_key: true\n  key_file: true\n  public_read: true\n\
             logs:\n  retention_days: 60\n",
        );
        if emulator.serves_whole_stack() {
            yaml.push_str(
                "instance:\n  type: t3.large\n  volume_size: 80\n\
                 database:\n  instance_class: db.t3.small\n  allocated_storage: 30\n",
            );
        }
        yaml
    };
    type Stack<'a> = &'a dyn Fn(&str) -> String;
    let rounds: [(Stack, &[&str]); 3] = [
        (&first, &["apply", "--auto-approve", "-v"]),
        (&changed, &["apply", "--auto-approve", "-v"]),
        (&changed, &["destroy", "--auto-approve", "-v"]),
    ];
    // Which writes each round makes: a plain run first.
    let seen = Project::new(&emulator.endpoint());
    let mut writes = Vec::new();
    for (stack, args) in rounds {
        seen.write("stack.yaml", &stack("seen"));
        let recorder = Proxy::start(emulator.port, Options::default());
        let out = seen.run_at(&recorder.endpoint(), args);
        assert_eq!(out.code, 0, "{out:?}");
        let mut round: Vec<String> = recorder
            .received()
            .into_iter()
            .filter(|op| {
                let read = ["Describe", "Get", "List", "S3 GET", "S3 HEAD"]
                    .iter()
                    .any(|p| op.starts_with(p));
                // RunInstances relies on its ClientToken, which moto ignores
                // (see lost_answers_of_creates_never_make_duplicates).
                !read && op != "RunInstances"
            })
            .map(|op| {
                op.trim_end_matches(" (lock)")
                    .replace("/seen-", "/lostall-")
            })
            .collect();
        round.sort();
        round.dedup();
        writes.push(round);
    }
    assert!(writes[0].len() >= 20, "{writes:?}");
    assert!(writes[1].len() >= 5, "{writes:?}");

    let p = Project::new(&emulator.endpoint());
    for ((stack, args), lost) in rounds.into_iter().zip(writes) {
        p.write("stack.yaml", &stack("lostall"));
        let proxy = Proxy::start(
            emulator.port,
            Options {
                lose_first_answer: lost.into_iter().collect(),
                ..Options::default()
            },
        );
        let out = p.run_at(&proxy.endpoint(), args);
        let stderr = &out.stderr;
        let injected: Vec<String> = proxy
            .injected()
            .iter()
            .map(|(r, _)| r.operation.clone())
            .collect();
        assert_eq!(out.code, 0, "{args:?}, lost {injected:?}:\n{stderr}");
        if args[0] == "destroy" {
            continue;
        }
        if injected.iter().any(|op| op == "CreateAccessKey") {
            // The key made by the lost call is of no use (its secret went
            // with the answer): deleted, and the key file names the new one.
            assert!(
                stderr.contains("deleting the key whose answer (and secret) was lost"),
                "{stderr}"
            );
            let keys = emulator
                .iam()
                .await
                .list_access_keys()
                .user_name("lostall-s3-user")
                .send()
                .await
                .unwrap();
            let [key] = keys.access_key_metadata() else {
                panic!("one key: {keys:?}")
            };
            let file = std::fs::read_to_string(p.dir.path().join("s3_access_key.env")).unwrap();
            assert!(file.contains(key.access_key_id().unwrap()), "{file}");
        }
        let live = tagged(&emulator, "lostall").await;
        assert_eq!(live.len(), emulator.stack_size(), "{live:?}");
        assert_eq!(orphans(&emulator, "lostall").await, Vec::<String>::new());
        let plan = p.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            plan.code, 0,
            "{plan:?}\nafter {args:?}, lost {injected:?}:\n{stderr}"
        );
    }
    assert!(tagged(&emulator, "lostall").await.is_empty());
    assert_eq!(orphans(&emulator, "lostall").await, Vec::<String>::new());
}

#[tokio::test]
async fn lost_answers_of_creates_never_make_duplicates() {
    // AWS did the create, the answer never arrived. CreateVpc, CreateSubnet,
    // CreateInternetGateway and CreateRouteTable take no idempotency token:
    // sent again blindly, each makes a second resource.
    let emulator = Emulator::start();
    emulator.ec2_with_key(REGION).await;
    let p = emulator.project("lost", REGION);
    let lose = [
        "CreateVpc",
        "CreateSubnet",
        "CreateInternetGateway",
        "CreateRouteTable",
        "CreateSecurityGroup",
        // Its ClientToken makes AWS answer a resend with the same instance;
        // moto ignores the token, so the proxy answers as AWS would.
        "RunInstances",
        "CreateLogGroup",
        "CreatePolicy",
        "CreateRole",
        "CreateInstanceProfile",
        "CreateDBSubnetGroup",
        "CreateDBInstance",
    ];
    let proxy = Proxy::start(
        emulator.port,
        Options {
            lose_first_answer: lose.iter().map(|s| s.to_string()).collect(),
            client_tokens: true,
            ..Options::default()
        },
    );
    let out = p.run_at(&proxy.endpoint(), &["apply", "--auto-approve", "-v"]);
    let stderr = &out.stderr;
    let lost: Vec<String> = proxy
        .injected()
        .iter()
        .map(|(r, _)| r.operation.clone())
        .collect();
    assert_eq!(out.code, 0, "lost {lost:?}:\n{stderr}");
    // Every create the stack makes lost its first answer.
    for op in lose {
        if emulator.serves_whole_stack() || !(op.contains("DB") || op == "RunInstances") {
            assert!(
                lost.iter().any(|l| l == op),
                "{op}'s answer was lost: {lost:?}"
            );
        }
    }
    let live = tagged(&emulator, "lost").await;
    assert_eq!(live.len(), emulator.stack_size(), "{live:?}");
    assert_eq!(orphans(&emulator, "lost").await, Vec::<String>::new());
    p.run_ok(&["plan", "--detailed-exitcode"], 0);
}
