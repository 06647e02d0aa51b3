//! Regions and availability zones, checked without an AWS call.
//!
//! The list is AWS's public regions as of 2026 (aws, aws-cn, aws-us-gov and
//! the European Sovereign Cloud). A region AWS opens later needs a release.

pub const KNOWN: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eusc-de-east-1",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

pub fn is_known(region: &str) -> bool {
    KNOWN.contains(&region)
}

/// Whether `az` names a zone of `region`: the region followed by a zone
/// letter (`eu-central-1a`), or a Local Zone (`us-west-2-lax-1a`).
pub fn az_in_region(az: &str, region: &str) -> bool {
    let Some(rest) = az.strip_prefix(region) else {
        return false;
    };
    let mut chars = rest.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => c.is_ascii_lowercase(),
        (Some('-'), Some(_)) => {
            let local = &rest[1..];
            local.ends_with(|c: char| c.is_ascii_lowercase())
                && local
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        assert!(az_in_region("eu-central-1a", "eu-central-1"));
        assert!(az_in_region("us-west-2-lax-1a", "us-west-2"));
        assert!(!az_in_region("eu-central-1", "eu-central-1"));
        assert!(!az_in_region("eu-central-12", "eu-central-1"));
        assert!(!az_in_region("eu-central-1ab", "eu-central-1"));
        assert!(!az_in_region("us-east-1a", "eu-central-1"));
        assert!(!az_in_region("eu-central-1A", "eu-central-1"));
    }

    #[test]
    fn regions_sorted_and_unique() {
        let mut sorted = KNOWN.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, KNOWN);
    }
}
