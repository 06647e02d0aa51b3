//! `plan --out FILE` and `apply FILE`: a plan reviewed in one place (a pull
//! request) and carried out later (on merge), only if it is still the plan.
//!
//! The file holds the stack file's SHA-256, the `plan --json` document (the
//! live values the plan was made from and every change; sensitive values
//! are null in it) and, for a stack with a database, the password's salted
//! Argon2 hash: never a secret in clear. `apply FILE` reads the password
//! again, plans again and goes ahead only if the new plan is the same.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Address;
use crate::plan::Plan;
use crate::stack::Stack;

/// What the file says it is.
pub const FORMAT: &str = "ihp-infra saved plan";
/// Changes when a field is removed or changes meaning.
pub const VERSION: u32 = 1;
/// A saved plan older than this is refused: the account has moved on.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    pub version: u32,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub stack: String,
    pub region: String,
    pub stack_file_sha256: String,
    /// The database password's salted hash (see [`crate::password`]).
    pub password_hash: Option<String>,
    /// `--replace` addresses the plan was made with.
    pub replace: Vec<String>,
    /// The `plan --json` document.
    pub plan: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SavedPlanError {
    #[error("{path} is not a saved plan of ihp-infra: {why}")]
    NotAPlan { path: String, why: String },
    #[error(
        "{path} is a saved plan of version {version}; this ihp-infra reads version {VERSION}: run plan --out again"
    )]
    Version { path: String, version: u32 },
    #[error(
        "{path} is a plan of stack {saved} in {saved_region}; the stack file is {stack} in {region}"
    )]
    OtherStack {
        path: String,
        saved: String,
        saved_region: String,
        stack: String,
        region: String,
    },
    #[error(
        "{path} was made {hours} hours ago; saved plans are good for 24 hours: run plan --out again"
    )]
    TooOld { path: String, hours: u64 },
    #[error("{path} was made in the future (by {seconds} s): check this machine's clock")]
    FromTheFuture { path: String, seconds: u64 },
    #[error("the stack file changed since {path} was made: run plan --out again")]
    StackFileChanged { path: String },
    #[error("db_password is not the password {path} was made with: run plan --out again")]
    PasswordChanged { path: String },
}

/// The stack file's SHA-256, hex.
pub fn file_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SavedPlan {
    /// The saved form of `plan`, made from `stack` (whose file held
    /// `stack_bytes`) at `now` (seconds since the epoch).
    pub fn new(
        plan: &Plan,
        stack: &Stack,
        stack_bytes: &[u8],
        replace: &[Address],
        password_hash: Option<String>,
        now: u64,
    ) -> SavedPlan {
        SavedPlan {
            format: FORMAT.into(),
            version: VERSION,
            created: now,
            stack: stack.prefix.clone(),
            region: stack.region.clone(),
            stack_file_sha256: file_digest(stack_bytes),
            password_hash,
            replace: replace.iter().map(Address::to_string).collect(),
            plan: serde_json::to_value(crate::json::plan(plan)).expect("a plan document is JSON"),
        }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("a saved plan is JSON") + "\n"
    }

    pub fn parse(path: &str, text: &str) -> Result<SavedPlan, SavedPlanError> {
        let not = |why: String| SavedPlanError::NotAPlan {
            path: path.into(),
            why,
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| not(format!("not JSON ({e})")))?;
        if json.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(not(format!("it lacks \"format\": \"{FORMAT}\"")));
        }
        let version = json.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if version != VERSION {
            return Err(SavedPlanError::Version {
                path: path.into(),
                version,
            });
        }
        serde_json::from_value(json).map_err(|e| not(e.to_string()))
    }

    /// Whether this plan may be applied to `stack` now. The password is
    /// checked by the caller ([`SavedPlan::password_matches`]): slow.
    pub fn check(
        &self,
        path: &str,
        stack: &Stack,
        stack_bytes: &[u8],
        now: u64,
    ) -> Result<(), SavedPlanError> {
        if self.stack != stack.prefix || self.region != stack.region {
            return Err(SavedPlanError::OtherStack {
                path: path.into(),
                saved: self.stack.clone(),
                saved_region: self.region.clone(),
                stack: stack.prefix.clone(),
                region: stack.region.clone(),
            });
        }
        if self.created > now + 300 {
            return Err(SavedPlanError::FromTheFuture {
                path: path.into(),
                seconds: self.created - now,
            });
        }
        if now.saturating_sub(self.created) > MAX_AGE.as_secs() {
            return Err(SavedPlanError::TooOld {
                path: path.into(),
                hours: (now - self.created) / 3600,
            });
        }
        if self.stack_file_sha256 != file_digest(stack_bytes) {
            return Err(SavedPlanError::StackFileChanged { path: path.into() });
        }
        Ok(())
    }

    /// Whether `stack`'s password is the one the plan was made with.
    pub fn password_matches(&self, stack: &Stack) -> bool {
        match &self.password_hash {
            Some(hash) => crate::password::verify(hash, stack.db_password.expose()),
            None => stack.database.is_none(),
        }
    }

    /// The `--replace` addresses, as addresses.
    pub fn replacing(&self) -> Vec<Address> {
        self.replace.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

/// What differs between the saved plan document and a new one, resource
/// by resource: empty when they are the same plan.
pub fn moved(saved: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let by_address = |doc: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        doc["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["address"].as_str().unwrap_or("?").to_string(), r.clone()))
            .collect()
    };
    let (before, after) = (by_address(saved), by_address(now));
    let mut out = Vec::new();
    for (address, was) in &before {
        match after.iter().find(|(a, _)| a == address) {
            None => out.push(format!("{address}: no longer in the plan")),
            Some((_, is)) if is != was => {
                let what = if is["action"] != was["action"] {
                    format!(
                        "was to {}, now to {}",
                        was["action"].as_str().unwrap_or("?"),
                        is["action"].as_str().unwrap_or("?")
                    )
                } else if is["id"] != was["id"] {
                    format!(
                        "was {}, is now {}",
                        was["id"].as_str().unwrap_or("missing"),
                        is["id"].as_str().unwrap_or("missing")
                    )
                } else {
                    "its changes differ".into()
                };
                out.push(format!("{address}: {what}"));
            }
            Some(_) => {}
        }
    }
    for (address, is) in &after {
        if !before.iter().any(|(a, _)| a == address) {
            out.push(format!(
                "{address}: new in the plan (to {})",
                is["action"].as_str().unwrap_or("?")
            ));
        }
    }
    if out.is_empty() && saved != now {
        out.push("the plan's summary or flags differ".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired;

    fn plan_of(stack: &Stack) -> Plan {
        let wanted = desired::resources(stack, &desired::test_facts());
        crate::plan::reconcile(&stack.prefix, &stack.region, &wanted, &[]).unwrap()
    }

    fn saved(stack: &Stack, now: u64) -> SavedPlan {
        SavedPlan::new(&plan_of(stack), stack, b"prefix: demo\n", &[], None, now)
    }

    #[test]
    fn round_trips_and_holds_no_secret() {
        let stack = crate::stack::test_stack("demo");
        let s = saved(&stack, 1_000);
        let text = s.to_text();
        assert!(!text.contains(stack.db_password.expose()), "{text}");
        let back = SavedPlan::parse("p.json", &text).unwrap();
        assert_eq!(back.plan, s.plan);
        assert_eq!(
            back.check("p.json", &stack, b"prefix: demo\n", 1_060),
            Ok(())
        );
        assert!(moved(&back.plan, &s.plan).is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let stack = crate::stack::test_stack("demo");
        let s = saved(&stack, 1_000_000);
        let other = crate::stack::test_stack("other");
        assert!(matches!(
            s.check("p", &other, b"prefix: demo\n", 1_000_000),
            Err(SavedPlanError::OtherStack { .. })
        ));
        assert!(matches!(
            s.check("p", &stack, b"prefix: demo\n", 1_000_000 + 25 * 3600),
            Err(SavedPlanError::TooOld { hours: 25, .. })
        ));
        assert_eq!(
            s.check("p", &stack, b"prefix: demo # edited\n", 1_000_000),
            Err(SavedPlanError::StackFileChanged { path: "p".into() })
        );
        let e = SavedPlan::parse(
            "p",
            "{\"format\": \"ihp-infra saved plan\", \"version\": 7}",
        )
        .unwrap_err();
        assert_eq!(
            e,
            SavedPlanError::Version {
                path: "p".into(),
                version: 7
            }
        );
        assert!(matches!(
            SavedPlan::parse("p", "{\"plan\": 1}"),
            Err(SavedPlanError::NotAPlan { .. })
        ));
    }

    #[test]
    fn says_what_moved() {
        let stack = crate::stack::test_stack("demo");
        let a = saved(&stack, 1).plan;
        let mut b = a.clone();
        b["resources"][0]["action"] = "no-op".into();
        let mut list = b["resources"].as_array().unwrap().clone();
        list.pop();
        b["resources"] = list.into();
        let moved = moved(&a, &b);
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert_eq!(moved[0], "vpc.vpc: was to create, now to no-op");
        assert!(moved[1].ends_with("no longer in the plan"), "{moved:?}");
    }
}
