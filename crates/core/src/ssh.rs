//! `ihp-infra ssh-config`: the `Host production` entry deploy-to-nixos
//! connects through, with the server's host keys pinned instead of trusted
//! on first use. NixOS's Amazon image prints the fingerprints of its host
//! keys to the console at boot (`print-host-key.service`); EC2 shows the
//! console (GetConsoleOutput); the keys themselves come from the server
//! (ssh-keyscan) and only those whose fingerprint the console shows are
//! written to the entry's known_hosts file.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

const BEGIN: &str = "-----BEGIN SSH HOST KEY FINGERPRINTS-----";
const END: &str = "-----END SSH HOST KEY FINGERPRINTS-----";

/// One line of `ssh-keygen -l`: `256 SHA256:... root@host (ED25519)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// `SHA256:` and the unpadded base64 of the key blob's SHA-256.
    pub sha256: String,
    /// The key type in parentheses, upper case (`ED25519`, `ECDSA`, `RSA`).
    pub kind: String,
}

/// The fingerprints of the last block the console shows (the last boot's),
/// or none when it shows none yet. Console lines may carry a `\r` and a
/// kernel-style prefix before the text.
pub fn console_fingerprints(console: &str) -> Vec<Fingerprint> {
    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    let Some(begin) = lines.iter().rposition(|l| l.contains(BEGIN)) else {
        return Vec::new();
    };
    lines[begin + 1..]
        .iter()
        .take_while(|l| !l.contains(END))
        .filter_map(|l| {
            let at = l.find("SHA256:")?;
            let sha256 = l[at..].split_whitespace().next()?.to_string();
            let kind = l
                .rsplit_once('(')
                .and_then(|(_, k)| k.strip_suffix(')'))
                .unwrap_or("")
                .to_string();
            Some(Fingerprint { sha256, kind })
        })
        .collect()
}

/// A host key as ssh-keyscan prints it: `host type base64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKey {
    pub kind: String,
    pub base64: String,
}

impl HostKey {
    /// What `ssh-keygen -l` prints for it: `SHA256:` and the unpadded
    /// base64 of the SHA-256 of the key blob. None for a blob that isn't
    /// base64.
    pub fn fingerprint(&self) -> Option<String> {
        let blob = STANDARD.decode(&self.base64).ok()?;
        Some(format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(&blob))
        ))
    }
}

/// The keys in ssh-keyscan's output (comments and blank lines skipped).
pub fn scanned_keys(output: &str) -> Vec<HostKey> {
    output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_host, kind, base64) = (parts.next()?, parts.next()?, parts.next()?);
            Some(HostKey {
                kind: kind.to_string(),
                base64: base64.to_string(),
            })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error(
        "the server's {kind} host key has fingerprint {scanned}, but its console shows {console}: \
         something between here and the server answers in its name, or the server was replaced \
         since it booted; nothing was trusted"
    )]
    Mismatch {
        kind: String,
        scanned: String,
        console: String,
    },
    #[error(
        "none of the keys the server offered ({offered}) has a fingerprint its console shows ({console}); nothing was trusted"
    )]
    NoneMatch { offered: String, console: String },
}

/// The keys to trust: those whose fingerprint the console shows. A key of
/// a type the console lists with another fingerprint is an error: that is
/// what an impostor looks like.
pub fn pin(console: &[Fingerprint], scanned: &[HostKey]) -> Result<Vec<HostKey>, PinError> {
    let mut trusted = Vec::new();
    for key in scanned {
        let Some(fingerprint) = key.fingerprint() else {
            continue;
        };
        if console.iter().any(|c| c.sha256 == fingerprint) {
            trusted.push(key.clone());
            continue;
        }
        let kind = kind_label(&key.kind);
        if let Some(listed) = console.iter().find(|c| c.kind == kind) {
            return Err(PinError::Mismatch {
                kind,
                scanned: fingerprint,
                console: listed.sha256.clone(),
            });
        }
    }
    if trusted.is_empty() {
        let list = |v: Vec<String>| v.join(", ");
        return Err(PinError::NoneMatch {
            offered: list(scanned.iter().filter_map(|k| k.fingerprint()).collect()),
            console: list(console.iter().map(|c| c.sha256.clone()).collect()),
        });
    }
    Ok(trusted)
}

/// The label ssh-keygen prints for a key type (`ssh-ed25519` → `ED25519`).
fn kind_label(kind: &str) -> String {
    match kind {
        "ssh-ed25519" => "ED25519".into(),
        "ssh-rsa" => "RSA".into(),
        k if k.starts_with("ecdsa-") => "ECDSA".into(),
        k => k.trim_start_matches("ssh-").to_uppercase(),
    }
}

/// What the entry says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub prefix: String,
    /// The alias deploy-to-nixos connects to (`production`).
    pub host: String,
    pub hostname: String,
    pub port: u16,
    pub identity_file: Option<String>,
    /// The known_hosts file the entry trusts, and nothing else.
    pub known_hosts: String,
}

impl Entry {
    /// The name the pinned keys are filed under: the server's address may
    /// change its DNS name, the keys stay with the stack.
    pub fn key_alias(&self) -> String {
        format!("ihp-infra-{}", self.prefix)
    }

    pub fn config(&self) -> String {
        let quote = |s: &str| {
            if s.contains(char::is_whitespace) {
                format!("\"{s}\"")
            } else {
                s.to_string()
            }
        };
        let mut text = format!(
            "# Written by `ihp-infra ssh-config` for stack {}; rewritten when it runs again.\n\
             Host {}\n    HostName {}\n    User root\n",
            self.prefix, self.host, self.hostname
        );
        if self.port != 22 {
            text.push_str(&format!("    Port {}\n", self.port));
        }
        match &self.identity_file {
            Some(file) => text.push_str(&format!("    IdentityFile {}\n", quote(file))),
            None => text.push_str(
                "    # IdentityFile: set ssh_key_file in the stack file (the key pair's private key)\n",
            ),
        }
        text.push_str(&format!(
            "    HostKeyAlias {}\n    UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n",
            self.key_alias(),
            quote(&self.known_hosts)
        ));
        text
    }

    /// The known_hosts lines for the trusted keys.
    pub fn known_hosts_text(&self, keys: &[HostKey]) -> String {
        keys.iter()
            .map(|k| format!("{} {} {}\n", self.key_alias(), k.kind, k.base64))
            .collect()
    }
}

/// The line `--install` adds at the top of `~/.ssh/config` (an Include
/// inside a Host block would apply to that host only).
pub fn include_line(dir: &str) -> String {
    format!("Include {dir}/*.config")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with ssh-keygen; the fingerprints are what `ssh-keygen -l` printed.
    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIECmFuUke9/tjY6ZR3A78GIor/l/ordpElOKQlFTTqWs";
    const ED25519_FP: &str = "SHA256:3FTY3FhMDQg1QIIwv7ljytk8UMHwvzuSSz9QLKbGVGc";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPxTxOyaKXGd/NDmfdj1jQN7qYhu+Fh0eWo4celGZ8vUjrmckAZ9rajCPjnJXJfmuzQJd/lzGODtKFjnb4S/LIs=";
    const ECDSA_FP: &str = "SHA256:3Prcc2Rc1eV/w6Ga/AI0mfAelSlf1o6Laul9wDWXUPE";

    fn console(fingerprints: &[(&str, &str)]) -> String {
        let mut text = String::from("[    5.1] systemd[1]: Starting sshd\r\n");
        text.push_str(&format!("{BEGIN}\r\n"));
        for (fp, kind) in fingerprints {
            text.push_str(&format!("256 {fp} root@ip-10-0-1-5 ({kind})\r\n"));
        }
        text.push_str(&format!("{END}\r\n[   9.2] reached target\r\n"));
        text
    }

    fn key(kind: &str, base64: &str) -> HostKey {
        HostKey {
            kind: kind.into(),
            base64: base64.into(),
        }
    }

    #[test]
    fn fingerprints_are_computed_as_ssh_keygen_does() {
        assert_eq!(
            key("ssh-ed25519", ED25519).fingerprint().unwrap(),
            ED25519_FP
        );
        assert_eq!(
            key("ecdsa-sha2-nistp256", ECDSA).fingerprint().unwrap(),
            ECDSA_FP
        );
        assert_eq!(key("ssh-ed25519", "not base64!").fingerprint(), None);
    }

    #[test]
    fn the_last_boots_block_counts() {
        assert_eq!(console_fingerprints("booting\nno keys yet\n"), []);
        let old = console(&[("SHA256:old", "ED25519")]);
        let new = console(&[(ED25519_FP, "ED25519"), (ECDSA_FP, "ECDSA")]);
        let found = console_fingerprints(&format!("{old}{new}"));
        assert_eq!(
            found,
            [
                Fingerprint {
                    sha256: ED25519_FP.into(),
                    kind: "ED25519".into()
                },
                Fingerprint {
                    sha256: ECDSA_FP.into(),
                    kind: "ECDSA".into()
                }
            ]
        );
    }

    #[test]
    fn only_keys_the_console_shows_are_trusted() {
        let console = console_fingerprints(&console(&[(ED25519_FP, "ED25519")]));
        let scanned = scanned_keys(&format!(
            "# 203.0.113.7:22 SSH-2.0-OpenSSH_9.9\n203.0.113.7 ssh-ed25519 {ED25519}\n203.0.113.7 ecdsa-sha2-nistp256 {ECDSA}\n"
        ));
        // The ECDSA key's type isn't on the console: left out, not an error.
        assert_eq!(
            pin(&console, &scanned),
            Ok(vec![key("ssh-ed25519", ED25519)])
        );
    }

    #[test]
    fn a_key_the_console_contradicts_is_an_error() {
        let console = console_fingerprints(&console(&[(ECDSA_FP, "ED25519")]));
        let err = pin(&console, &[key("ssh-ed25519", ED25519)]).unwrap_err();
        assert!(matches!(&err, PinError::Mismatch { kind, .. } if kind == "ED25519"));
        assert!(err.to_string().contains("nothing was trusted"));
        let err = pin(&[], &[key("ssh-ed25519", ED25519)]).unwrap_err();
        assert!(matches!(err, PinError::NoneMatch { .. }));
    }

    #[test]
    fn entry_text() {
        let entry = Entry {
            prefix: "demo".into(),
            host: "production".into(),
            hostname: "ec2-203-0-113-7.eu-central-1.compute.amazonaws.com".into(),
            port: 22,
            identity_file: Some("~/.ssh/my key.pem".into()),
            known_hosts: "~/.ssh/ihp-infra/demo.known_hosts".into(),
        };
        insta::assert_snapshot!(entry.config());
        assert_eq!(
            entry.known_hosts_text(&[key("ssh-ed25519", ED25519)]),
            format!("ihp-infra-demo ssh-ed25519 {ED25519}\n")
        );
        assert_eq!(
            include_line("~/.ssh/ihp-infra"),
            "Include ~/.ssh/ihp-infra/*.config"
        );
    }
}
