//! What the server needs at run time that must not be in git or the Nix
//! store: SSM SecureString parameters under `/ihp-infra/<prefix>/`, one per
//! environment variable, which the server reads with its role at boot (see
//! [`crate::nixos`]).

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One parameter: its role in the stack and the variable it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parameter {
    pub role: &'static str,
    pub variable: &'static str,
}

/// The database's URL, password included (percent-encoded).
pub const DATABASE_URL: Parameter = Parameter {
    role: "database-url",
    variable: "DATABASE_URL",
};
/// The S3 user's key pair: IHP's S3 storage reads only these variables.
pub const KEY_ID: Parameter = Parameter {
    role: "s3-key-id",
    variable: "AWS_ACCESS_KEY_ID",
};
pub const SECRET_KEY: Parameter = Parameter {
    role: "s3-secret-key",
    variable: "AWS_SECRET_ACCESS_KEY",
};

/// The SMTP user's credentials for SES: its access key id, and the SMTP
/// password derived from its secret ([`crate::mail::smtp_password`]).
pub const SMTP_USER: Parameter = Parameter {
    role: "smtp-username",
    variable: "SMTP_USER",
};
pub const SMTP_PASSWORD: Parameter = Parameter {
    role: "smtp-password",
    variable: "SMTP_PASSWORD",
};

pub const ALL: [Parameter; 5] = [DATABASE_URL, KEY_ID, SECRET_KEY, SMTP_USER, SMTP_PASSWORD];

/// The access key (its role) whose id or secret a parameter holds.
pub fn key_of(parameter: Parameter) -> Option<&'static str> {
    match parameter {
        KEY_ID | SECRET_KEY => Some(S3_KEY),
        SMTP_USER | SMTP_PASSWORD => Some(SMTP_KEY),
        _ => None,
    }
}

/// The roles of the two access keys: the S3 user's, the SMTP user's.
pub const S3_KEY: &str = "s3-user-key";
pub const SMTP_KEY: &str = "smtp-user-key";

/// Whether a parameter's value is a key id (no secret: plans name keys by it).
pub fn holds_key_id(parameter: Parameter) -> bool {
    parameter == KEY_ID || parameter == SMTP_USER
}

/// `/ihp-infra/<prefix>/`: the stack's parameters and nothing else.
pub fn path(prefix: &str) -> String {
    format!("/ihp-infra/{prefix}/")
}

/// The full name of a parameter of stack `prefix`.
pub fn name(prefix: &str, parameter: Parameter) -> String {
    format!("{}{}", path(prefix), parameter.variable)
}

/// The parameter a role names, if any.
pub fn by_role(role: &str) -> Option<Parameter> {
    ALL.into_iter().find(|p| p.role == role)
}

/// The parameter a full name names, if it is one of the stack's.
pub fn by_name(prefix: &str, name: &str) -> Option<Parameter> {
    let variable = name.strip_prefix(&path(prefix))?;
    ALL.into_iter().find(|p| p.variable == variable)
}

/// What a secret value is compared by: keyed with a random key made once
/// per process, so a digest says nothing outside the run that made it
/// (plans compare the live value's digest with the wanted one's).
pub fn digest(value: &str) -> String {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source failed");
        key
    });
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(value.as_bytes());
    let out = hasher.finalize();
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// `postgres://user@host:port/postgres`: the database URL without the
/// password, for the NixOS module (the parameter has the whole URL).
pub fn database_url_without_password(username: &str, host: &str, port: i32) -> String {
    database_url(username, "", host, port).replacen(":@", "@", 1)
}

/// `postgres://user:password@host:port/postgres`: RDS creates the
/// `postgres` database; user and password percent-encoded.
pub fn database_url(username: &str, password: &str, host: &str, port: i32) -> String {
    fn encode(s: &str) -> percent_encoding::PercentEncode<'_> {
        percent_encoding::utf8_percent_encode(s, crate::outputs::USERINFO)
    }
    format!(
        "postgres://{}:{}@{host}:{port}/postgres",
        encode(username),
        encode(password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_under_the_stacks_path() {
        assert_eq!(name("demo", DATABASE_URL), "/ihp-infra/demo/DATABASE_URL");
        assert_eq!(
            by_name("demo", "/ihp-infra/demo/AWS_ACCESS_KEY_ID"),
            Some(KEY_ID)
        );
        assert_eq!(by_name("demo", "/ihp-infra/demo-2/DATABASE_URL"), None);
        assert_eq!(by_name("demo", "/ihp-infra/demo/OTHER"), None);
        assert_eq!(by_role("s3-secret-key"), Some(SECRET_KEY));
    }

    #[test]
    fn digests_compare_values_without_being_them() {
        assert_eq!(digest("pass"), digest("pass"));
        assert_ne!(digest("pass"), digest("pass2"));
        assert!(!digest("pass").contains("pass"));
        assert_eq!(digest("x").len(), 64);
    }

    #[test]
    fn database_url_encodes_what_a_url_would_misread() {
        assert_eq!(
            database_url("postgres_user", "p@ss:w/rd#%$'\\", "db.example", 5432),
            "postgres://postgres_user:p%40ss%3Aw%2Frd%23%25$'%5C@db.example:5432/postgres"
        );
        assert_eq!(
            database_url_without_password("postgres_user", "db.example", 5432),
            "postgres://postgres_user@db.example:5432/postgres"
        );
    }
}
