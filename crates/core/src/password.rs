//! The database password can't be read back from AWS. To notice a changed
//! `db_password` without storing it, the database carries a tag with a
//! salted Argon2id hash of it; planning checks the stack's password against
//! that hash. The tag uses only characters AWS allows in tag values.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The tag on the database that holds the hash.
pub const TAG: &str = "ihp-infra:password-hash";

// OWASP's Password Storage Cheat Sheet lists m=19 MiB/t=2, 12 MiB/t=3,
// 9 MiB/t=4 and 7 MiB/t=5 as equally strong Argon2id settings. The smallest
// memory keeps a plan's peak memory low (the hash is computed on every plan);
// older tags carry their own settings and still verify.
const M_COST: u32 = 7_168;
const T_COST: u32 = 5;
const P_COST: u32 = 1;

fn derive(password: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Option<Vec<u8>> {
    let params = Params::new(m, t, p, Some(32)).ok()?;
    let mut out = vec![0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .ok()?;
    Some(out)
}

/// A new hash with a random salt: `argon2id:v19:m7168:t5:p1:<salt>:<hash>`.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    // The OS random source failing is not something to plan around.
    getrandom::fill(&mut salt).expect("the operating system's random source failed");
    let out = derive(password, &salt, M_COST, T_COST, P_COST).unwrap_or_default();
    format!(
        "argon2id:v19:m{M_COST}:t{T_COST}:p{P_COST}:{}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// Whether `password` is the one hashed in `tag`. A tag we can't parse
/// means "changed": the password is set again and the tag rewritten.
pub fn verify(tag: &str, password: &str) -> bool {
    let parts: Vec<&str> = tag.split(':').collect();
    let [alg, "v19", m, t, p, salt, expected] = parts[..] else {
        return false;
    };
    if alg != "argon2id" {
        return false;
    }
    let num = |s: &str, prefix: char| s.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
    let (Some(m), Some(t), Some(p)) = (num(m, 'm'), num(t, 't'), num(p, 'p')) else {
        return false;
    };
    // Refuse absurd costs from a tampered tag instead of spending minutes on them.
    if m > 1 << 20 || t > 10 || p > 8 {
        return false;
    }
    let (Ok(salt), Ok(expected)) = (STANDARD.decode(salt), STANDARD.decode(expected)) else {
        return false;
    };
    derive(password, &salt, m, t, p).is_some_and(|actual| actual == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_hides_the_password() {
        let tag = hash("Sup3r-s3cret-pw!");
        assert!(verify(&tag, "Sup3r-s3cret-pw!"));
        assert!(!verify(&tag, "Sup3r-s3cret-pw?"));
        assert!(!tag.contains("Sup3r"));
        assert!(
            tag.len() <= 256,
            "AWS tag values are at most 256 characters"
        );
        // AWS tag values allow letters, digits, spaces and _ . : / = + - @
        assert!(
            tag.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:/=+-@ ".contains(c)),
            "{tag}"
        );
    }

    #[test]
    fn tags_made_with_the_earlier_settings_still_verify() {
        // Databases tagged before the switch to 7 MiB/t=5 carry 19 MiB/t=2.
        let salt = [7u8; 16];
        let out = derive("old-password-1", &salt, 19_456, 2, 1).unwrap();
        let tag = format!(
            "argon2id:v19:m19456:t2:p1:{}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(out)
        );
        assert!(verify(&tag, "old-password-1"));
        assert!(!verify(&tag, "old-password-2"));
        assert!(hash("x-password").starts_with("argon2id:v19:m7168:t5:p1:"));
    }

    #[test]
    fn salted_so_equal_passwords_hash_differently() {
        assert_ne!(hash("same-password"), hash("same-password"));
    }

    #[test]
    fn garbage_tags_mean_changed() {
        for tag in [
            "",
            "argon2id",
            "md5:v19:m1:t1:p1:AA==:AA==",
            "argon2id:v19:mX:t2:p1:AA==:AA==",
            "argon2id:v19:m99999999:t2:p1:AA==:AA==",
        ] {
            assert!(!verify(tag, "whatever-pw"), "{tag}");
        }
    }
}
