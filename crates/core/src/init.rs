//! `ihp-infra init`: a commented stack file to start from. The text is
//! stacks/example.yaml with the user's prefix, region and key pair, so the
//! example in the repository and the file users get never drift apart.

use std::io::Write;
use std::path::Path;

use crate::{regions, stack};

const EXAMPLE: &str = include_str!("../../../stacks/example.yaml");
const EXAMPLE_PREFIX: &str = "my-ihp-app";
const EXAMPLE_REGION: &str = "eu-central-1";
const EXAMPLE_KEY: &str = "my-ihp-key";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{path} already exists; ihp-infra init never overwrites a stack file (pick another with --stack)"
    )]
    Exists { path: String },
    #[error("prefix {prefix:?} {reason}")]
    Prefix { prefix: String, reason: String },
    #[error("unknown region {region:?}; allowed: {}", regions::KNOWN.join(", "))]
    Region { region: String },
    #[error("key_name must be the name of an EC2 key pair: 1 to 255 ASCII characters")]
    KeyName,
    #[error("failed to write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The answers, checked as the stack loader will check them.
pub fn check(prefix: &str, region: &str, key_name: &str) -> Result<(), InitError> {
    stack::check_prefix(prefix).map_err(|reason| InitError::Prefix {
        prefix: prefix.to_string(),
        reason,
    })?;
    if !regions::is_known(region) {
        return Err(InitError::Region {
            region: region.to_string(),
        });
    }
    if key_name.is_empty() || key_name.len() > 255 || !key_name.is_ascii() {
        return Err(InitError::KeyName);
    }
    Ok(())
}

/// The stack file's text for these answers.
pub fn stack_file(prefix: &str, region: &str, key_name: &str) -> String {
    EXAMPLE
        .replace(
            "# Check it with `ihp-infra validate --stack stacks/example.yaml` (no AWS call).",
            "# Check it with `ihp-infra validate` (no AWS call); see what it would do\n\
             # with `ihp-infra plan`. Set the database password first:\n\
             #   export IHP_INFRA_DB_PASSWORD='...'",
        )
        .replace(EXAMPLE_PREFIX, prefix)
        .replace(EXAMPLE_REGION, region)
        .replace(EXAMPLE_KEY, key_name)
}

/// Writes the file, failing if one is already there (even one created
/// between the check and the write: `create_new`).
pub fn write(path: &Path, text: &str) -> Result<(), InitError> {
    let shown = || path.display().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => InitError::Exists { path: shown() },
            _ => InitError::Write {
                path: shown(),
                source,
            },
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| InitError::Write {
            path: shown(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_for_any_region_is_a_valid_stack() {
        for region in ["eu-central-1", "us-east-1", "ap-southeast-2", "sa-east-1"] {
            let text = stack_file("shop", region, "laptop");
            let env = |_: &str| Some("a-long-password".to_string());
            let stack = stack::parse(Path::new("stack.yaml"), &text, &env)
                .unwrap_or_else(|p| panic!("{region}: {p:?}\n{text}"));
            assert_eq!(stack.prefix, "shop");
            assert_eq!(stack.region, region);
            assert_eq!(stack.az_1, format!("{region}a"));
            assert_eq!(stack.key_name, "laptop");
            assert_eq!(stack.storage.bucket, "shop-storage");
            assert!(!text.contains("my-ihp"), "{text}");
        }
    }

    #[test]
    fn bad_answers_are_refused_with_what_is_allowed() {
        assert!(check("shop", "eu-central-1", "k").is_ok());
        assert!(matches!(
            check("Shop!", "eu-central-1", "k"),
            Err(InitError::Prefix { .. })
        ));
        let e = check("shop", "eu-middle-9", "k").unwrap_err().to_string();
        assert!(e.contains("allowed: ") && e.contains("us-east-1"), "{e}");
        assert!(matches!(
            check("shop", "eu-central-1", ""),
            Err(InitError::KeyName)
        ));
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.yaml");
        write(&path, "first").unwrap();
        let e = write(&path, "second").unwrap_err();
        assert!(matches!(e, InitError::Exists { .. }));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
    }
}
