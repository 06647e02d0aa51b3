//! Mail through Amazon SES: the SMTP endpoint and the SMTP password,
//! which SES derives from an IAM user's secret access key.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::stack::Secret;

/// The port the app submits mail on, with STARTTLS (IHP's boilerplate and
/// SES's documented default).
pub const SMTP_PORT: u16 = 587;

/// SES's SMTP endpoint in `region`.
pub fn smtp_host(region: &str) -> String {
    format!("email-smtp.{region}.amazonaws.com")
}

/// The SMTP password of an IAM user whose secret access key is `secret`,
/// for SES in `region`: AWS's documented conversion (a SigV4 signing key
/// over fixed values, version byte 4, base64).
/// https://docs.aws.amazon.com/ses/latest/dg/smtp-credentials.html
pub fn smtp_password(secret: &Secret, region: &str) -> Secret {
    // The fixed inputs of the conversion; they never change.
    const DATE: &str = "11111111";
    const SERVICE: &str = "ses";
    const TERMINAL: &str = "aws4_request";
    const MESSAGE: &str = "SendRawEmail";
    const VERSION: u8 = 0x04;
    fn sign(key: &[u8], message: &str) -> Vec<u8> {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .expect("HMAC takes a key of any length");
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
    let mut key = format!("AWS4{}", secret.expose()).into_bytes();
    for part in [DATE, region, SERVICE, TERMINAL, MESSAGE] {
        key = sign(&key, part);
    }
    let mut out = vec![VERSION];
    out.extend(key);
    Secret::new(base64::engine::general_purpose::STANDARD.encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors terraform-provider-aws checks its `ses_smtp_password_v4`
    /// against (TestSESSMTPPasswordFromSecretKeySigV4): passwords known to
    /// authenticate against SES, so agreeing with them is the point.
    #[test]
    fn smtp_password_matches_the_published_derivation() {
        for (region, secret, expected) in [
            (
                "eu-central-1",
                "some+secret+key",
                "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2",
            ),
            (
                "eu-central-1",
                "another+secret+key",
                "BBbphbrQmrKMx42d1N6+C7VINYEBGI5v9VsZeTxwskfh",
            ),
            (
                "us-west-1",
                "some+secret+key",
                "BH+jbMzper5WwlwUar9E1ySBqHa9whi0GPo+sJ0mVYJj",
            ),
            (
                "us-west-1",
                "another+secret+key",
                "BKVmjjMDFk/qqw8EROW99bjCS65PF8WKvK5bSr4Y6EqF",
            ),
        ] {
            assert_eq!(
                smtp_password(&Secret::new(secret), region).expose(),
                expected,
                "{region} {secret}"
            );
        }
    }

    #[test]
    fn smtp_password_is_redacted_in_debug_output() {
        let password = smtp_password(&Secret::new("some+secret+key"), "eu-central-1");
        assert_eq!(format!("{password:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn smtp_host_is_the_regions() {
        assert_eq!(smtp_host("eu-west-1"), "email-smtp.eu-west-1.amazonaws.com");
    }
}
