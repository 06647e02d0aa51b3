//! What the next step needs after an apply: for deploy-to-nixos, the app
//! and vector. Never the password or a secret key: those live only in their
//! 0600 files.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outputs {
    pub instance_dns: Option<String>,
    pub db_endpoint: Option<String>,
    pub db_username: Option<String>,
    pub region: String,
    pub bucket: String,
    pub log_group: String,
    /// Where the access key's secret was written, when the stack makes one.
    pub access_key_file: Option<String>,
}

impl Outputs {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("INSTANCE_URL", self.instance_dns.as_deref()),
            ("DB_ENDPOINT", self.db_endpoint.as_deref()),
            ("DB_USERNAME", self.db_username.as_deref()),
            ("AWS_REGION", Some(self.region.as_str())),
            ("S3_BUCKET", Some(self.bucket.as_str())),
            ("CLOUDWATCH_LOG_GROUP", Some(self.log_group.as_str())),
            ("S3_ACCESS_KEY_FILE", self.access_key_file.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// `KEY=value` lines, for `eval` or an env file.
    pub fn to_env(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_skip_what_does_not_exist() {
        let o = Outputs {
            instance_dns: Some("ec2-1.example".into()),
            region: "eu-central-1".into(),
            bucket: "demo-storage".into(),
            log_group: "/ihp/demo".into(),
            ..Default::default()
        };
        assert_eq!(
            o.to_env(),
            "INSTANCE_URL=ec2-1.example\nAWS_REGION=eu-central-1\nS3_BUCKET=demo-storage\nCLOUDWATCH_LOG_GROUP=/ihp/demo\n"
        );
        let json: serde_json::Value = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(json["bucket"], "demo-storage");
        assert_eq!(json["db_endpoint"], serde_json::Value::Null);
    }
}
