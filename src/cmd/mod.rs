//! One module per subcommand.

pub mod apply;
pub mod check;
pub mod profile;
pub mod watch;

use std::io::IsTerminal;

use crate::cli::{Cli, Color};
use crate::report::TextStyle;

pub fn text_style(cli: &Cli, diff: bool) -> TextStyle {
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    TextStyle { color, verbose: cli.verbose > 0, quiet: cli.quiet > 0, diff }
}
