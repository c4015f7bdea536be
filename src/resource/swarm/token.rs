//! The swarm join token: read from a systemd credential or a private file, kept out of every
//! message, report and log line. The token's text leaves this module only towards the engine.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::profile::TokenSource;

pub use crate::secret::{JoinToken, MAX_TOKEN_BYTES, REDACTED, parse, redact_tokens};

/// Where the token comes from, as a message may say it (never the token).
pub fn describe(source: &TokenSource, credentials_dir: Option<&Path>) -> String {
    match source {
        TokenSource::File(path) => format!("token file {}", path.display()),
        TokenSource::Credential(name) => match credentials_dir {
            Some(dir) => format!("credential {name} ({})", dir.join(name).display()),
            None => format!("credential {name}"),
        },
    }
}

/// The file the token is read from: `path` (already resolved under the host root) or the
/// credential in `$CREDENTIALS_DIRECTORY`.
pub fn location(
    source: &TokenSource,
    resolved_file: Option<PathBuf>,
    credentials_dir: Option<&Path>,
) -> Result<PathBuf, String> {
    match source {
        TokenSource::File(_) => resolved_file.ok_or_else(|| "no token file".to_string()),
        TokenSource::Credential(name) => credentials_dir.map(|d| d.join(name)).ok_or_else(|| {
            format!(
                "no join token: $CREDENTIALS_DIRECTORY is not set, so the systemd credential {name} is not available; \
                 add `LoadCredential={name}:/etc/vakt/{name}` to vakt-provision.service, or set [swarm] token_file"
            )
        }),
    }
}

/// Why a token file with this owner and mode must not be used, if it must not: it has to be
/// owned by the user vakt runs as (root) and closed to others, like an SSH private key.
pub fn unsafe_ownership(owner: u32, mode: u32, euid: u32) -> Option<String> {
    if owner != euid {
        Some(format!("it is owned by uid {owner}, not by the user vakt runs as ({euid})"))
    } else if mode & 0o007 != 0 {
        Some(format!("others may access it (mode {:04o})", mode & 0o7777))
    } else if mode & 0o020 != 0 {
        Some(format!("its group may write it (mode {:04o})", mode & 0o7777))
    } else {
        None
    }
}

/// Reads and checks the token at `path`; errors name the file and never its content.
pub fn read(path: &Path) -> Result<JoinToken, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    // O_NONBLOCK: a FIFO must not block the run; the type is checked right after.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("failed to read the join token {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("failed to read the join token {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("refusing the join token {shown}: not a regular file"));
    }
    if let Some(why) = unsafe_ownership(meta.uid(), meta.mode(), nix::unistd::geteuid().as_raw()) {
        return Err(format!(
            "refusing the join token {shown}: {why}; a join token is a secret: `chown root: {shown} && chmod 600 {shown}`"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("failed to read the join token {shown}: {e}"))?;
    parse(&bytes).map_err(|why| format!("refusing the join token {shown}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";

    #[test]
    fn debug_never_shows_the_token() {
        let t = parse(TOKEN.as_bytes()).expect("a token");
        assert_eq!(format!("{t:?}"), "[join token]");
        assert_eq!(format!("{:?}", Some(t.clone())), "Some([join token])");
        assert_eq!(t.expose(), TOKEN);
    }

    #[test]
    fn redaction_replaces_the_token_and_anything_like_one() {
        let t = parse(format!("{TOKEN}\n").as_bytes()).expect("trailing newline is fine");
        let engine = format!("{{\"JoinToken\":\"{TOKEN}\",\"RemoteAddrs\":[\"10.0.0.1:2377\"]}}: invalid join token");
        let red = t.redact(&engine);
        assert_eq!(red, "{\"JoinToken\":\"[join token]\",\"RemoteAddrs\":[\"10.0.0.1:2377\"]}: invalid join token");
        let other = "token SWMTKN-1-abc-def, and SWMTKN-1-xyz at the end SWMTKN-";
        assert_eq!(redact_tokens(other), "token [join token], and [join token] at the end [join token]");
        assert_eq!(redact_tokens("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn content_that_is_no_token_is_refused_without_being_quoted() {
        for bad in ["", "\n", "hunter2", "SWMTKN-1-abc def", "SWMTKN-1-abc\nSWMTKN-1-def", "swmtkn-1-abc"] {
            let e = parse(bad.as_bytes()).expect_err(bad);
            assert!(!e.contains("hunter2") && !e.contains("SWMTKN") && !e.contains("abc"), "{e}");
        }
        assert!(parse(&[b'S'; 5000]).expect_err("too long").contains("larger than"));
    }

    #[test]
    fn token_files_must_be_private_to_root() {
        assert_eq!(unsafe_ownership(0, 0o100600, 0), None);
        assert_eq!(unsafe_ownership(0, 0o100400, 0), None);
        assert_eq!(unsafe_ownership(0, 0o100640, 0), None, "group-readable by root's group is private");
        assert!(unsafe_ownership(0, 0o100644, 0).expect("world-readable").contains("others may access it (mode 0644)"));
        assert!(unsafe_ownership(0, 0o100660, 0).expect("group-writable").contains("group may write"));
        assert!(unsafe_ownership(1000, 0o100600, 0).expect("not root's").contains("owned by uid 1000"));
    }

    #[test]
    fn a_world_readable_file_is_refused_and_its_content_never_shown() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("swarm-join-token");
        std::fs::write(&path, TOKEN).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read(&path).expect_err("world-readable");
        assert!(e.contains("refusing the join token") && e.contains("chmod 600"), "{e}");
        assert!(!e.contains(TOKEN), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read(&path).expect("private").expose(), TOKEN);
        let missing = read(&dir.path().join("absent")).expect_err("missing");
        assert!(missing.contains("failed to read the join token") && missing.contains("absent"), "{missing}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        assert!(read(&fifo).expect_err("fifo").contains("not a regular file"));
    }

    #[test]
    fn without_a_credentials_directory_the_message_says_how_to_give_one() {
        let e = location(&TokenSource::Credential("swarm-join-token".into()), None, None).expect_err("no dir");
        assert!(e.contains("LoadCredential=swarm-join-token:") && e.contains("token_file"), "{e}");
        let p = location(&TokenSource::Credential("swarm-join-token".into()), None, Some(Path::new("/run/creds")))
            .expect("dir");
        assert_eq!(p, Path::new("/run/creds/swarm-join-token"));
    }
}
