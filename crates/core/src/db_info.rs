//! db_info.txt: what the next step needs, in the four-line format users'
//! scripts already parse. It holds the password, so it is written with mode
//! 0600 from the start (never readable by others, not even for a moment).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::stack::Secret;

pub const FILE_NAME: &str = "db_info.txt";
pub const ACCESS_KEY_FILE: &str = "s3_access_key.env";

pub fn render(
    instance_dns: &str,
    db_endpoint: &str,
    db_username: &str,
    password: &Secret,
) -> String {
    format!(
        "Instance URL: {instance_dns}\nDB Endpoint: {db_endpoint}\nDB Username: {db_username}\nDB Password: {}\n",
        password.expose()
    )
}

/// Where db_info.txt goes: next to the stack file.
pub fn path_for(stack_file: &Path) -> PathBuf {
    stack_file
        .parent()
        .map(|d| d.join(FILE_NAME))
        .unwrap_or_else(|| PathBuf::from(FILE_NAME))
}

/// Where a new access key's secret goes: next to the stack file.
pub fn access_key_path(stack_file: &Path) -> PathBuf {
    path_for(stack_file).with_file_name(ACCESS_KEY_FILE)
}

pub fn write(
    path: &Path,
    instance_dns: &str,
    db_endpoint: &str,
    db_username: &str,
    password: &Secret,
) -> std::io::Result<()> {
    write_private(
        path,
        &render(instance_dns, db_endpoint, db_username, password),
    )
}

/// Writes a file only its owner can read: through a 0600 temporary file
/// renamed into place, so a reader never sees half a file and the secret
/// is never readable by others, not even for a moment.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    write_with_mode(path, text, 0o600)
}

/// Writes a whole file with `mode` through a temporary file renamed into
/// place (created 0600, then given `mode`).
pub fn write_with_mode(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A unique name beside the target (tempfile makes it 0600), so two runs
    // never write through each other's temporary file.
    let mut file = tempfile::Builder::new()
        .prefix(".ihp-infra-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    // The umask can only remove bits; make sure of the mode whatever it was.
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))?;
    file.persist(path).map_err(|e| e.error)?;
    // The rename is only durable once the folder is on disk too.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: &str = "ec2-1-2-3-4.compute.amazonaws.com";
    const ENDPOINT: &str = "demo-postgres-db.abc.eu-central-1.rds.amazonaws.com";

    #[test]
    fn four_lines_in_the_known_format() {
        assert_eq!(
            render(DNS, ENDPOINT, "postgres_user", &Secret::new("pw-123456")),
            "Instance URL: ec2-1-2-3-4.compute.amazonaws.com\n\
             DB Endpoint: demo-postgres-db.abc.eu-central-1.rds.amazonaws.com\n\
             DB Username: postgres_user\n\
             DB Password: pw-123456\n"
        );
    }

    #[test]
    fn written_next_to_the_stack_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("stack.yaml"));
        assert_eq!(path, dir.path().join("db_info.txt"));
        // An older file readable by all is replaced by a private one.
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(
            &path,
            DNS,
            ENDPOINT,
            "postgres_user",
            &Secret::new("pw-123456"),
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("DB Password: pw-123456\n")
        );
        assert_eq!(
            path_for(Path::new("stack.yaml")),
            PathBuf::from("db_info.txt")
        );
    }
}
