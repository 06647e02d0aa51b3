//! `ihp-infra ssh-config`: the ssh entry deploy-to-nixos connects through
//! (`~/.ssh/ihp-infra/<prefix>.config`), with the server's host keys pinned
//! from its console (`<prefix>.known_hosts`): see [`crate::ssh`].

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::aws::{self, Aws};
use crate::ssh::{self, Entry, PinError};
use crate::stack::Stack;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the stack has no running server to write an ssh entry for; run `ihp-infra apply`")]
    NoServer,
    #[error("HOME is not set: no ~/.ssh to write to")]
    NoHome,
    #[error("failed to run ssh-keyscan (part of OpenSSH; install it): {source}")]
    Keyscan {
        #[source]
        source: std::io::Error,
    },
    #[error("ssh-keyscan {address} found no host key: {stderr}")]
    NoKeys { address: String, stderr: String },
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("failed to write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the entries live, as ssh reads it (`~` expanded by ssh) and as a path.
pub const DIR: &str = "~/.ssh/ihp-infra";

pub fn dir() -> Result<PathBuf, Error> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(Error::NoHome)?;
    Ok(PathBuf::from(home).join(".ssh/ihp-infra"))
}

/// What [`write`] did.
pub struct Written {
    pub config: PathBuf,
    pub host: String,
    /// The keys now trusted; none while the console shows no fingerprints.
    pub pinned: Vec<String>,
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let failed = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    crate::db_info::write_with_mode(path, text, mode).map_err(failed)
}

/// Writes the stack's entry, and its known_hosts from the keys the server
/// offers that its console vouches for.
pub async fn write(
    stack: &Stack,
    settings: &aws::Settings,
    port: u16,
) -> Result<Written, crate::Error> {
    let aws = Aws::connect(stack, settings).await?;
    let server = aws.server().await?.ok_or(Error::NoServer)?;
    let console = aws.console_output(&server.id).await?;
    let dir = dir()?;
    let entry = Entry {
        prefix: stack.prefix.clone(),
        host: stack.ssh_host.clone(),
        hostname: server.dns.clone(),
        port,
        identity_file: stack.ssh_key_file.clone(),
        known_hosts: format!("{DIR}/{}.known_hosts", stack.prefix),
    };
    let config = dir.join(format!("{}.config", stack.prefix));
    let known_hosts = dir.join(format!("{}.known_hosts", stack.prefix));
    let fingerprints = ssh::console_fingerprints(&console);
    let mut pinned = Vec::new();
    if !fingerprints.is_empty() {
        let address = server.ip.clone().unwrap_or_else(|| server.dns.clone());
        let out = Command::new("ssh-keyscan")
            .args(["-T", "10", "-p", &port.to_string(), &address])
            .output()
            .map_err(|source| Error::Keyscan { source })?;
        let keys = ssh::scanned_keys(&String::from_utf8_lossy(&out.stdout));
        if keys.is_empty() {
            return Err(Error::NoKeys {
                address,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into());
        }
        let trusted = ssh::pin(&fingerprints, &keys).map_err(Error::from)?;
        write_file(&known_hosts, &entry.known_hosts_text(&trusted), 0o644)?;
        pinned = trusted
            .iter()
            .filter_map(|k| k.fingerprint().map(|f| format!("{} {f}", k.kind)))
            .collect();
    }
    write_file(&config, &entry.config(), 0o644)?;
    Ok(Written {
        config,
        host: stack.ssh_host.clone(),
        pinned,
    })
}

/// Adds the Include line at the top of `~/.ssh/config` unless it is there;
/// says whether it added it. Nothing else in the file changes.
pub fn install_include() -> Result<bool, Error> {
    let path = user_config()?;
    let line = ssh::include_line(DIR);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    write_file(&path, &format!("{line}\n{old}"), 0o600)?;
    Ok(true)
}

/// Where `~/.ssh/config` is, for the question before [`install_include`].
pub fn user_config() -> Result<PathBuf, Error> {
    Ok(dir()?.parent().expect("~/.ssh").join("config"))
}
