//! Writes what the Debian package ships beside the binary, generated from vakt's own command
//! line definition so that it cannot drift from `--help`: the manual page `vakt.1` and shell
//! completions for bash, zsh and fish. `dist/build-deb.sh` runs it before `cargo deb`.
//!
//!     cargo run --release --example gen_assets -- target/assets

use std::fs;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/assets".into()));
    fs::create_dir_all(out.join("completions"))?;
    let cmd = vakt::cli::Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    fs::write(out.join("vakt.1"), page)?;
    for (shell, name) in [(Shell::Bash, "vakt"), (Shell::Zsh, "_vakt"), (Shell::Fish, "vakt.fish")] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "vakt", &mut text);
        fs::write(out.join("completions").join(name), text)?;
    }
    Ok(())
}
