//! One module per subcommand.

pub mod apply;
pub mod check;
pub mod confirm;
pub mod profile;
pub mod watch;

use std::io::{IsTerminal, Write};

use crate::cli::{Cli, Color, Format};
use crate::error::Invalid;
use crate::report::TextStyle;

/// Writes to standard output. A reader that went away (`vakt check | head`) ends the output
/// quietly, as ripgrep does; any other write error (a full disk) is an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::anyhow!("failed to write to standard output: {e}")),
        Ok(()) => Ok(()),
    }
}

/// Runs `body`; when it fails before a report exists (an invalid profile), a machine format
/// still gets a document that carries the error.
pub fn or_error_document(
    command: &str,
    format: Format,
    body: impl FnOnce() -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    body().inspect_err(|e| {
        if e.downcast_ref::<Invalid>().is_some()
            && let Some(doc) = crate::report::render_error(command, format, &format!("{e:#}"))
        {
            let _ = emit(&doc);
        }
    })
}

pub fn text_style(cli: &Cli, diff: bool) -> TextStyle {
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    TextStyle { color, verbose: cli.verbose > 0, quiet: cli.quiet > 0, diff }
}
