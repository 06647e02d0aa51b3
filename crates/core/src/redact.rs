//! The last line of defence for secrets: every text the binary writes
//! (stdout, stderr, logs, panic messages) passes through [`redact`], which
//! replaces each registered secret with `(sensitive)`. The code never puts
//! a secret in a message on purpose; this catches what it can't control,
//! such as an AWS error message that echoes a request parameter.

use std::borrow::Cow;
use std::sync::RwLock;

pub const MASK: &str = "(sensitive)";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// From now on, `secret` (and its URL-encoded form, as it travels in
/// requests) never appears in output.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for s in [secret.to_string(), encoded] {
        if !secrets.contains(&s) {
            secrets.push(s);
        }
    }
    // Longest first, so a secret inside another is not half-replaced.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by `(sensitive)`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_raw_and_url_encoded() {
        register("Pa$$w0rd!#42");
        assert_eq!(
            redact("InvalidParameterValue: MasterUserPassword=Pa$$w0rd!#42 is bad"),
            "InvalidParameterValue: MasterUserPassword=(sensitive) is bad"
        );
        assert_eq!(
            redact("Action=CreateDBInstance&MasterUserPassword=Pa%24%24w0rd%21%2342"),
            "Action=CreateDBInstance&MasterUserPassword=(sensitive)"
        );
        assert!(matches!(redact("nothing secret"), Cow::Borrowed(_)));
        register("");
        assert_eq!(redact("empty is no secret"), "empty is no secret");
    }
}
