//! The last line of defence for secrets: every text the binary writes
//! (stdout, stderr, logs, panic messages) passes through [`redact`], which
//! replaces each registered secret with `(sensitive)`. The code never puts
//! a secret in a message on purpose; this catches what it can't control,
//! such as an AWS error message that echoes a request parameter.

use std::borrow::Cow;
use std::sync::RwLock;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub const MASK: &str = "(sensitive)";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Percent-encoding of everything but letters and digits.
const ALL_BUT_ALPHANUMERIC: &AsciiSet = NON_ALPHANUMERIC;
/// RFC 3986's: `- . _ ~` stay as they are (the SDK's query encoding).
const ALL_BUT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Every form `secret` can take on its way to some output: raw; percent-
/// encoded with each character set in use (the SDK's query encoding, a
/// URL's user info, everything but letters and digits), upper- and
/// lower-case hex; with `\` and `"` escaped (JSON logs, Debug); XML-escaped
/// (AWS's answers, logged at -vv).
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    for set in [
        ALL_BUT_ALPHANUMERIC,
        ALL_BUT_UNRESERVED,
        crate::outputs::USERINFO,
    ] {
        let encoded = utf8_percent_encode(secret, set).to_string();
        forms.push(lower_hex(&encoded));
        forms.push(encoded);
    }
    forms.push(secret.replace('\\', "\\\\").replace('"', "\\\""));
    forms.push(
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&apos;")
            .replace('"', "&quot;"),
    );
    forms
}

/// `%2F` as `%2f`: some encoders write hex in lower case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// From now on, `secret` (in every form it can travel in: [`forms`]) never
/// appears in output.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms(secret) {
        if !secrets.contains(&form) {
            secrets.push(form);
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
    fn every_encoding_of_a_password_with_unreserved_and_special_characters_is_masked() {
        let password = "Kx7-._~!'*()%$#\\Mq4v";
        register(password);
        let sdk = "Kx7-._~%21%27%2A%28%29%25%24%23%5CMq4v";
        let userinfo = "Kx7-._~!'*()%25$%23%5CMq4v";
        let every = "Kx7%2D%2E%5F%7E%21%27%2A%28%29%25%24%23%5CMq4v";
        for form in [
            password.to_string(),
            sdk.to_string(),
            sdk.to_ascii_lowercase()
                .replace("kx7", "Kx7")
                .replace("mq4v", "Mq4v"),
            userinfo.to_string(),
            every.to_string(),
            "Kx7-._~!'*()%$#\\\\Mq4v".to_string(),
            "Kx7-._~!&apos;*()%$#\\Mq4v".to_string(),
        ] {
            let text = format!("before {form} after");
            assert_eq!(redact(&text), "before (sensitive) after", "{form}");
        }
    }

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
