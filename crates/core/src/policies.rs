//! IAM and bucket policy documents: the JSON templates in `policies/`,
//! filled in with the stack's ARNs (partition and account from STS).
//!
//! Documents are compared in a canonical form (parsed JSON, keys sorted),
//! since AWS returns them re-serialised, and URL-encoded from IAM.

use serde_json::Value;

const S3_ACCESS: &str = include_str!("../policies/s3-access.json");
const CLOUDWATCH_LOGS: &str = include_str!("../policies/cloudwatch-logs.json");
const S3_PUBLIC_READ: &str = include_str!("../policies/s3-public-read.json");
const EC2_ASSUME_ROLE: &str = include_str!("../policies/ec2-assume-role.json");
const SSM_READ: &str = include_str!("../policies/ssm-read.json");
const BACKUPS_WRITE: &str = include_str!("../policies/backups-write.json");
const SES_SEND: &str = include_str!("../policies/ses-send.json");

/// Where the stack's things live, for ARNs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arns {
    pub partition: String,
    pub account: String,
    pub region: String,
}

impl Arns {
    pub fn bucket(&self, bucket: &str) -> String {
        format!("arn:{}:s3:::{bucket}", self.partition)
    }
    pub fn log_group(&self, group: &str) -> String {
        format!(
            "arn:{}:logs:{}:{}:log-group:{group}",
            self.partition, self.region, self.account
        )
    }
    /// Every log group of the account here (DescribeLogGroups takes no
    /// narrower resource).
    pub fn log_groups(&self) -> String {
        format!(
            "arn:{}:logs:{}:{}:log-group:*",
            self.partition, self.region, self.account
        )
    }
    /// An SSM parameter or path, `name` starting with `/`.
    pub fn parameter(&self, name: &str) -> String {
        format!(
            "arn:{}:ssm:{}:{}:parameter{name}",
            self.partition, self.region, self.account
        )
    }
    /// An SES identity (a domain or an address).
    pub fn ses_identity(&self, identity: &str) -> String {
        format!(
            "arn:{}:ses:{}:{}:identity/{identity}",
            self.partition, self.region, self.account
        )
    }
    pub fn policy(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:policy/{name}", self.partition, self.account)
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = template.to_string();
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    canonical(&text).expect("the bundled policy templates are valid JSON")
}

pub fn s3_access(arns: &Arns, bucket: &str) -> String {
    fill(S3_ACCESS, &[("bucket_arn", &arns.bucket(bucket))])
}

/// Listing the backups bucket and adding to it: no delete, and versioning
/// keeps what a put replaces, so a taken-over server can't erase history.
pub fn backups_write(arns: &Arns, bucket: &str) -> String {
    fill(BACKUPS_WRITE, &[("bucket_arn", &arns.bucket(bucket))])
}

/// Sending raw mail (what SES's SMTP interface does) as the mail domain,
/// and nothing else.
pub fn ses_send(arns: &Arns, domain: &str) -> String {
    fill(SES_SEND, &[("identity_arn", &arns.ses_identity(domain))])
}

pub fn cloudwatch_logs(arns: &Arns, group: &str) -> String {
    fill(
        CLOUDWATCH_LOGS,
        &[
            ("log_group_arn", &arns.log_group(group)),
            ("log_groups_arn", &arns.log_groups()),
        ],
    )
}

/// Reading the stack's parameters (`/ihp-infra/<prefix>/...`) and nothing
/// else of SSM. The AWS-managed key that encrypts them needs no grant: its
/// key policy lets SSM decrypt for whoever may read the parameter.
pub fn ssm_read(arns: &Arns, prefix: &str) -> String {
    let path = crate::handover::path(prefix);
    fill(
        SSM_READ,
        &[("path_arn", &arns.parameter(path.trim_end_matches('/')))],
    )
}

pub fn s3_public_read(arns: &Arns, bucket: &str) -> String {
    fill(S3_PUBLIC_READ, &[("bucket_arn", &arns.bucket(bucket))])
}

pub fn ec2_assume_role() -> String {
    fill(EC2_ASSUME_ROLE, &[])
}

/// One spelling per document: parsed and written back with sorted keys.
/// IAM returns documents URL-encoded; moto returns them plain: accept both.
pub fn canonical(document: &str) -> Option<String> {
    let text = if document.trim_start().starts_with('{') {
        document.to_string()
    } else {
        percent_encoding::percent_decode_str(document)
            .decode_utf8()
            .ok()?
            .into_owned()
    };
    let value: Value = serde_json::from_str(&text).ok()?;
    serde_json::to_string(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arns() -> Arns {
        Arns {
            partition: "aws".into(),
            account: "123456789012".into(),
            region: "eu-central-1".into(),
        }
    }

    #[test]
    fn s3_access_covers_bucket_and_objects() {
        let doc: Value = serde_json::from_str(&s3_access(&arns(), "demo-storage")).unwrap();
        assert_eq!(doc["Statement"][0]["Action"], "s3:*");
        assert_eq!(
            doc["Statement"][0]["Resource"],
            serde_json::json!(["arn:aws:s3:::demo-storage", "arn:aws:s3:::demo-storage/*"])
        );
    }

    #[test]
    fn logs_policy_covers_group_and_streams() {
        let doc: Value = serde_json::from_str(&cloudwatch_logs(&arns(), "/ihp/demo")).unwrap();
        let g = "arn:aws:logs:eu-central-1:123456789012:log-group:/ihp/demo";
        assert_eq!(
            doc["Statement"][0]["Resource"],
            serde_json::json!([g, format!("{g}:*")])
        );
        assert_eq!(
            doc["Statement"][0]["Action"],
            serde_json::json!([
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams"
            ])
        );
    }

    #[test]
    fn vector_may_check_that_log_groups_exist() {
        let doc: Value = serde_json::from_str(&cloudwatch_logs(&arns(), "/ihp/demo")).unwrap();
        assert_eq!(doc["Statement"][1]["Action"], "logs:DescribeLogGroups");
        assert_eq!(
            doc["Statement"][1]["Resource"],
            "arn:aws:logs:eu-central-1:123456789012:log-group:*"
        );
    }

    #[test]
    fn the_role_reads_only_its_stacks_parameters() {
        let doc: Value = serde_json::from_str(&ssm_read(&arns(), "demo")).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
        let p = "arn:aws:ssm:eu-central-1:123456789012:parameter/ihp-infra/demo";
        assert_eq!(
            doc["Statement"][0]["Resource"],
            serde_json::json!([p, format!("{p}/*")])
        );
        assert!(
            !ssm_read(&arns(), "demo").contains("ssm:*"),
            "no write, no other path"
        );
    }

    #[test]
    fn public_read_is_get_object_on_objects_only() {
        let doc: Value = serde_json::from_str(&s3_public_read(&arns(), "b")).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(doc["Statement"][0]["Action"], "s3:GetObject");
        assert_eq!(doc["Statement"][0]["Principal"], "*");
        assert_eq!(doc["Statement"][0]["Resource"], "arn:aws:s3:::b/*");
    }

    #[test]
    fn partition_comes_from_the_account() {
        let cn = Arns {
            partition: "aws-cn".into(),
            ..arns()
        };
        assert!(s3_access(&cn, "b").contains("arn:aws-cn:s3:::b"));
    }

    #[test]
    fn url_encoded_and_plain_documents_compare_equal() {
        let plain = s3_access(&arns(), "b");
        let encoded: String = percent_encoding::utf8_percent_encode(
            "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Sid\": \"AppFiles\", \"Effect\": \"Allow\", \"Action\": \"s3:*\", \"Resource\": [\"arn:aws:s3:::b\", \"arn:aws:s3:::b/*\"]}]}",
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert_eq!(canonical(&encoded).unwrap(), plain);
        assert_eq!(canonical("not json"), None);
    }
}
