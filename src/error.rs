//! The one error kind callers branch on: an invalid invocation or profile (exit code 2).

/// Something the operator must fix before vakt touches anything: a bad profile, a bad flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Exit codes, as documented in `--help` and the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const DRIFT: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const UNKNOWN: u8 = 3;
}
