//! `ihp-infra.nix`: the NixOS module apply writes for the user to import
//! once (`imports = [ ./ihp-infra.nix ];`). It carries what the server's
//! configuration needs from the stack, and no secret: the server fetches
//! those from the stack's SSM parameters ([`crate::handover`]) with its
//! role at boot, into a root-only file under `/run` that the app's units
//! read as an `EnvironmentFile` (which overrides their `Environment`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the module says about one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub prefix: String,
    pub region: String,
    /// `x86_64-linux` or `aarch64-linux`: the server's.
    pub system: String,
    /// The instance type, for the architecture assertion's message.
    pub instance_type: String,
    pub bucket: String,
    pub log_group: String,
    /// The database URL without its password (the parameter has it).
    pub database_url: Option<String>,
    /// The variables the fetched file must hold; a missing one fails the
    /// fetch loudly rather than starting the app without it.
    pub required: Vec<&'static str>,
    /// The app's names over HTTPS, when the stack has a domain.
    pub domain: Option<Domain>,
    /// The bucket the database dumps are copied to (`backups:`).
    pub backups_bucket: Option<String>,
    /// SES's SMTP endpoint, when the stack has mail.
    pub smtp_host: Option<String>,
}

/// The unit (and timer) that copies the dumps off the server.
pub const BACKUP_COPY_UNIT: &str = "ihp-infra-backup-copy";

/// What nginx and ACME need of the stack's domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub aliases: Vec<String>,
    pub acme_email: String,
}

/// Where the fetched secrets go on the server (systemd's RuntimeDirectory).
pub const ENV_FILE: &str = "/run/ihp-infra/env";
/// The oneshot unit that fetches them.
pub const FETCH_UNIT: &str = "ihp-infra-secrets";
/// The units that get the file. app and worker always exist with IHP's
/// module; migrate only with migrations, loadSchema only when imported:
/// a drop-in for a unit that isn't defined defines nothing.
pub const UNITS: [&str; 4] = ["app", "worker", "migrate", "loadSchema"];

/// The file name apply writes.
pub const FILE_NAME: &str = "ihp-infra.nix";

/// Where the module goes when the stack doesn't say: in the project's
/// production host folder, when the stack file is inside an IHP project
/// (the nearest folder above it with a `flake.nix`), else beside it.
pub fn default_path(stack_file: &Path) -> PathBuf {
    let dir = stack_file.parent().unwrap_or(Path::new(""));
    // Searched from the absolute folder: the project may be above the
    // working directory.
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let project = absolute.ancestors().find(|d| d.join("flake.nix").is_file());
    match project {
        Some(root) => root.join("Config/nix/hosts/production").join(FILE_NAME),
        None => dir.join(FILE_NAME),
    }
}

/// A Nix string literal ("..."), escaped.
fn nix_string(s: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `${` would start an interpolation.
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The fetch script, as a Nix indented string's body. It uses no `${`
/// and no `''` of its own, so only the tool paths are interpolated.
fn fetch_script(module: &Module) -> String {
    let path = crate::handover::path(&module.prefix);
    let required = module.required.join(" ");
    format!(
        r#"set -euo pipefail
umask 077
# systemd sets RUNTIME_DIRECTORY (RuntimeDirectory=ihp-infra, mode 0700).
out="$RUNTIME_DIRECTORY/env"
tries=10
for try in $(seq 1 "$tries"); do
  if json=$(${{pkgs.awscli2}}/bin/aws ssm get-parameters-by-path \
      --region {region} --path {path} --recursive --with-decryption --output json); then
    break
  fi
  if [ "$try" = "$tries" ]; then
    echo "ihp-infra: could not read the parameters under {path} with the server's role after $tries tries" >&2
    exit 1
  fi
  sleep $((try * 3))
done
# One NAME="value" line per parameter; inside double quotes systemd (and a
# shell) unescapes exactly \" \\ \` \$, so any value comes through intact.
printf '%s' "$json" | ${{pkgs.jq}}/bin/jq -r --arg path {path} '
  .Parameters[]
  | (.Name | ltrimstr($path)) as $name
  | select($name | test("^[A-Za-z_][A-Za-z0-9_]*$"))
  | $name + "=\"" + (.Value | gsub("(?<c>[\"\\\\`$])"; "\\\(.c)")) + "\""
' >"$out.new"
for name in {required}; do
  if ! grep -q "^$name=" "$out.new"; then
    echo "ihp-infra: parameter {path}$name is missing; run ihp-infra apply" >&2
    rm -f "$out.new"
    exit 1
  fi
done
mv "$out.new" "$out"
"#,
        region = shell_word(&module.region),
        path = shell_word(&path),
    )
}

/// A word the shell takes as it is (the stack's names are validated to
/// plain characters; quote anyway).
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Indents every non-empty line by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module's text.
pub fn render(module: &Module) -> String {
    let mut nix = String::new();
    let prefix = &module.prefix;
    let _ = writeln!(
        nix,
        "# Written by ihp-infra for stack {prefix} on every apply: don't edit, it is\n\
         # rewritten. Import it once from configuration.nix: imports = [ ./{FILE_NAME} ];\n\
         # No secret is in it: the server reads them at boot from SSM Parameter Store\n\
         # ({}) with its instance role.",
        crate::handover::path(prefix)
    );
    nix.push_str("{ config, lib, pkgs, modulesPath, ... }:\n");
    nix.push_str("let\n");
    let _ = writeln!(nix, "  region = {};", nix_string(&module.region));
    let _ = writeln!(
        nix,
        "  fetch = pkgs.writeShellScript \"ihp-infra-fetch-secrets\" ''\n{}\n  '';",
        indent(&fetch_script(module), 4)
    );
    let _ = writeln!(
        nix,
        "  # A drop-in per unit: it adds the file to the units that exist and\n  \
         # defines none (migrate exists only with migrations).\n  \
         dropIn = unit: pkgs.writeTextDir \"lib/systemd/system/${{unit}}.service.d/ihp-infra.conf\" ''\n    \
         [Unit]\n    Requires={FETCH_UNIT}.service\n    After={FETCH_UNIT}.service\n    \
         [Service]\n    EnvironmentFile={ENV_FILE}\n  '';"
    );
    nix.push_str("in\n{\n");
    nix.push_str("  imports = [ \"${modulesPath}/virtualisation/amazon-image.nix\" ];\n\n");
    let _ = writeln!(
        nix,
        "  assertions = [\n    {{\n      assertion = pkgs.stdenv.hostPlatform.system == {system};\n      \
         message = \"ihp-infra: the server of stack {prefix} is {} ({}), but this configuration is built for ${{pkgs.stdenv.hostPlatform.system}}: set system = \\\"{}\\\" in Config/nix/hosts/production/host.nix\";\n    }}\n  ];\n",
        module.system,
        module.instance_type,
        module.system,
        system = nix_string(&module.system),
    );
    if let Some(url) = &module.database_url {
        let _ = writeln!(
            nix,
            "  # Without the password: {FETCH_UNIT} puts the whole URL in the units' environment.\n  \
             services.ihp.databaseUrl = {};\n",
            nix_string(url)
        );
    }
    // Mail goes to SES's endpoint on 587 with STARTTLS (the boilerplate's
    // settings); its user and password come with the other secrets.
    let smtp = module
        .smtp_host
        .as_ref()
        .map(|host| {
            format!(
                "    SMTP_HOST = {};\n    SMTP_PORT = \"{}\";\n    SMTP_ENCRYPTION = \"STARTTLS\";\n",
                nix_string(host),
                crate::mail::SMTP_PORT
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        nix,
        "  services.ihp.additionalEnvVars = {{\n    AWS_REGION = region;\n    S3_BUCKET = {};\n{smtp}  }};\n",
        nix_string(&module.bucket)
    );
    if let Some(domain) = &module.domain {
        domain_block(&mut nix, domain);
    }
    if let Some(bucket) = &module.backups_bucket {
        backups_block(&mut nix, bucket);
    }
    let units: Vec<String> = UNITS.iter().map(|u| nix_string(u)).collect();
    let _ = writeln!(
        nix,
        "  systemd.services.{FETCH_UNIT} = {{\n    \
         description = \"Fetch the secrets of ihp-infra stack {prefix} from SSM Parameter Store\";\n    \
         wants = [ \"network-online.target\" ];\n    \
         after = [ \"network-online.target\" ];\n    \
         serviceConfig = {{\n      \
         Type = \"oneshot\";\n      \
         RemainAfterExit = true;\n      \
         RuntimeDirectory = \"ihp-infra\";\n      \
         RuntimeDirectoryMode = \"0700\";\n      \
         ExecStart = \"${{fetch}}\";\n    \
         }};\n  \
         }};\n  \
         systemd.packages = map dropIn [ {} ];\n",
        units.join(" ")
    );
    let _ = writeln!(
        nix,
        "  # The journal of the app, its worker and nginx to CloudWatch, with the\n  \
         # server's role (no keys).\n  \
         services.vector = {{\n    \
         enable = true;\n    \
         journaldAccess = true;\n    \
         settings = {{\n      \
         sources.ihp_journal = {{\n        \
         type = \"journald\";\n        \
         include_units = [ \"app\" \"worker\" \"nginx\" ];\n      \
         }};\n      \
         sinks.cloudwatch = {{\n        \
         type = \"aws_cloudwatch_logs\";\n        \
         inputs = [ \"ihp_journal\" ];\n        \
         region = region;\n        \
         group_name = {};\n        \
         stream_name = {};\n        \
         encoding.codec = \"json\";\n      \
         }};\n    \
         }};\n  \
         }};\n}}",
        nix_string(&module.log_group),
        // A template needs a literal part: the host name alone is refused.
        nix_string(&format!("{prefix}-{{{{ host }}}}")),
    );
    nix
}

/// The domain: IHP's name for the app, nginx in front of it with a Let's
/// Encrypt certificate (HTTP-01, once the names resolve to the server).
/// The stack file decides the domain and the contact: they win over the
/// boilerplate's placeholders (mkForce). The proxy is a default, so IHP's
/// appWithPostgres, which defines the same host, still agrees.
fn domain_block(nix: &mut String, domain: &Domain) {
    let aliases: Vec<String> = domain.aliases.iter().map(|a| nix_string(a)).collect();
    let _ = writeln!(
        nix,
        "  # The domain: HTTPS by Let's Encrypt (HTTP-01) once its records resolve here.\n  \
         services.ihp.domain = lib.mkForce {name};\n  \
         security.acme.acceptTerms = true;\n  \
         security.acme.defaults.email = lib.mkForce {email};\n  \
         networking.firewall.allowedTCPPorts = [ 80 443 ];\n  \
         services.nginx = {{\n    \
         enable = true;\n    \
         recommendedProxySettings = lib.mkDefault true;\n    \
         recommendedTlsSettings = lib.mkDefault true;\n    \
         virtualHosts.{name} = {{\n      \
         serverAliases = [ {aliases} ];\n      \
         enableACME = lib.mkDefault true;\n      \
         forceSSL = lib.mkDefault true;\n      \
         locations.\"/\" = {{\n        \
         proxyPass = lib.mkDefault \"http://127.0.0.1:${{toString config.services.ihp.appPort}}\";\n        \
         proxyWebsockets = lib.mkDefault true;\n      \
         }};\n    \
         }};\n  \
         }};\n",
        name = nix_string(&domain.name),
        email = nix_string(&domain.acme_email),
        aliases = aliases.join(" "),
    );
}

/// Backups: NixOS dumps every database daily (01:15) into
/// /var/backup/postgresql; an hour later the server copies the folder to
/// the backups bucket with its role, which may add objects and never
/// delete them (the bucket keeps each replaced dump as a version).
fn backups_block(nix: &mut String, bucket: &str) {
    // Bucket names are plain (validated): nothing to quote for the shell.
    let _ = writeln!(
        nix,
        "  # Backups: a daily dump of Postgres on this server, copied to S3 bucket {bucket}.\n  \
         services.postgresqlBackup.enable = true;\n  \
         systemd.services.{BACKUP_COPY_UNIT} = {{\n    \
         description = \"Copy the database dumps to S3 bucket {bucket}\";\n    \
         wants = [ \"network-online.target\" ];\n    \
         after = [ \"network-online.target\" \"postgresqlBackup.service\" ];\n    \
         serviceConfig.Type = \"oneshot\";\n    \
         script = \"${{pkgs.awscli2}}/bin/aws s3 sync ${{config.services.postgresqlBackup.location}} s3://{bucket}/ --exclude '*.in-progress.*' --region ${{region}} --only-show-errors\";\n  \
         }};\n  \
         systemd.timers.{BACKUP_COPY_UNIT} = {{\n    \
         wantedBy = [ \"timers.target\" ];\n    \
         timerConfig = {{ OnCalendar = \"*-*-* 02:15:00\"; Persistent = true; }};\n  \
         }};\n"
    );
}

/// Writes the module when its text differs from the file's; says whether
/// it wrote. Never a secret in it, so an ordinary file (0644).
pub fn write(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::db_info::write_with_mode(path, text, 0o644)?;
    Ok(true)
}

/// Whether the project's configuration.nix beside the module still imports
/// IHP's appWithPostgres (which runs a Postgres of its own on the server).
pub fn imports_app_with_postgres(module_path: &Path) -> Option<PathBuf> {
    let config = module_path.parent()?.join("configuration.nix");
    let text = std::fs::read_to_string(&config).ok()?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .any(|l| l.contains("appWithPostgres"))
        .then_some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn module() -> Module {
        Module {
            prefix: "demo".into(),
            region: "eu-central-1".into(),
            system: "x86_64-linux".into(),
            instance_type: "t3.medium".into(),
            bucket: "demo-storage".into(),
            log_group: "/ihp/demo".into(),
            database_url: Some("postgres://postgres_user@db.example:5432/postgres".into()),
            required: vec!["DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
            domain: None,
            backups_bucket: None,
            smtp_host: None,
        }
    }

    #[test]
    fn module_with_mail_points_the_app_at_ses() {
        let mut m = module();
        m.smtp_host = Some(crate::mail::smtp_host("eu-central-1"));
        let text = render(&m);
        assert!(
            text.contains("    S3_BUCKET = \"demo-storage\";\n    SMTP_HOST = \"email-smtp.eu-central-1.amazonaws.com\";\n    SMTP_PORT = \"587\";\n    SMTP_ENCRYPTION = \"STARTTLS\";\n  };"),
            "{text}"
        );
    }

    #[test]
    fn module_with_backups() {
        let mut m = module();
        m.backups_bucket = Some("demo-backups".into());
        let text = render(&m);
        let block = text
            .split("\n\n")
            .find(|b| b.contains("# Backups"))
            .unwrap();
        insta::assert_snapshot!(block);
    }

    #[test]
    fn module_with_a_domain() {
        let mut m = module();
        m.domain = Some(Domain {
            name: "app.example.org".into(),
            aliases: vec!["www.example.org".into()],
            acme_email: "ops@example.org".into(),
        });
        let text = render(&m);
        let block = text
            .split("\n\n")
            .find(|b| b.contains("# The domain"))
            .unwrap();
        insta::assert_snapshot!(block);
    }

    #[test]
    fn module_text() {
        insta::assert_snapshot!(render(&module()));
    }

    #[test]
    fn nix_strings_escape_what_nix_would_read() {
        assert_eq!(nix_string("a\"b\\c${d}$e"), r#""a\"b\\c\${d}$e""#);
    }

    #[test]
    fn the_module_goes_into_the_project_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("app");
        std::fs::create_dir_all(project.join("infra")).unwrap();
        assert_eq!(
            default_path(&project.join("infra/stack.yaml")),
            project.join("infra/ihp-infra.nix")
        );
        std::fs::write(project.join("flake.nix"), "{}").unwrap();
        assert_eq!(
            default_path(&project.join("infra/stack.yaml")),
            project.join("Config/nix/hosts/production/ihp-infra.nix")
        );
        assert_eq!(
            default_path(Path::new("stack.yaml")),
            Path::new("ihp-infra.nix")
        );
    }

    #[test]
    fn written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/ihp-infra.nix");
        assert!(write(&path, "x").unwrap());
        assert!(!write(&path, "x").unwrap());
        assert!(write(&path, "y").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "y");
    }

    #[test]
    fn app_with_postgres_is_noticed_unless_commented_out() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join(FILE_NAME);
        let config = dir.path().join("configuration.nix");
        assert_eq!(imports_app_with_postgres(&module), None);
        std::fs::write(&config, "imports = [ ihp.nixosModules.appWithPostgres ];\n").unwrap();
        assert_eq!(imports_app_with_postgres(&module), Some(config.clone()));
        std::fs::write(
            &config,
            "imports = [ ihp.nixosModules.app ]; # not appWithPostgres\n",
        )
        .unwrap();
        assert_eq!(imports_app_with_postgres(&module), None);
    }
}
