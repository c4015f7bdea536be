//! The swarm join token as a value: a type whose text never reaches a message, a report or a
//! log line, and the redaction of anything that looks like one. A leaf: the Engine API client
//! and the swarm resource both use it. Reading the token from a file or a systemd credential
//! is the swarm resource's (`resource::swarm::token`).

/// Real tokens are about 85 bytes; anything much longer is not one.
pub const MAX_TOKEN_BYTES: u64 = 4096;

/// What a join token is replaced with wherever text might carry it.
pub const REDACTED: &str = "[join token]";
/// The prefix swarmkit gives every join token (`SWMTKN-1-…`).
const PREFIX: &str = "SWMTKN-";

/// A join token. It has no `Display`, and its `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl JoinToken {
    /// The secret, for the join request only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with this token, and anything else that looks like a join token, replaced.
    pub fn redact(&self, text: &str) -> String {
        redact_tokens(&text.replace(&self.0, REDACTED))
    }
}

/// Replaces every run that starts like a join token (the prefix and the token's alphabet).
pub fn redact_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str(REDACTED);
        let tail = &rest[at + PREFIX.len()..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The token in a file's bytes: one line, the swarm token alphabet, the swarm token prefix.
/// The messages describe the content without quoting any of it.
pub fn parse(bytes: &[u8]) -> Result<JoinToken, String> {
    if bytes.len() as u64 > MAX_TOKEN_BYTES {
        return Err(format!("it is larger than {MAX_TOKEN_BYTES} bytes, not a join token"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_string())?.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || !text.starts_with(PREFIX) {
        return Err("it does not hold a swarm join token (what `docker swarm join-token -q worker` prints on a manager, on one line)".into());
    }
    Ok(JoinToken(text.to_string()))
}
