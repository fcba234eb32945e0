//! Shell completions and man pages, generated from a binary's own flags (clap_complete,
//! clap_mangen), so they never drift from `--help`.

use std::io::Write as _;

/// What `--generate` writes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// A man page (roff): `publisher --generate man > publisher.1`.
    Man,
    /// Bash completions.
    CompleteBash,
    /// Zsh completions.
    CompleteZsh,
    /// Fish completions.
    CompleteFish,
    /// PowerShell completions.
    CompletePowershell,
}

/// The `--generate` flag every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateFlags {
    /// Write a man page or shell completions to stdout, and exit.
    #[arg(long, value_enum, hide_short_help = true)]
    pub generate: Option<Generate>,
}

impl GenerateFlags {
    /// When `--generate` was given, writes what it asks for `C`'s command and returns
    /// `true`: the caller exits.
    pub fn write_if_asked<C: clap::CommandFactory>(&self) -> anyhow::Result<bool> {
        let Some(kind) = self.generate else { return Ok(false) };
        let mut command = C::command();
        let name = command.get_name().to_owned();
        let mut out = std::io::stdout().lock();
        let shell = match kind {
            Generate::Man => {
                clap_mangen::Man::new(command).render(&mut out)?;
                out.flush()?;
                return Ok(true);
            }
            Generate::CompleteBash => clap_complete::Shell::Bash,
            Generate::CompleteZsh => clap_complete::Shell::Zsh,
            Generate::CompleteFish => clap_complete::Shell::Fish,
            Generate::CompletePowershell => clap_complete::Shell::PowerShell,
        };
        clap_complete::generate(shell, &mut command, name, &mut out);
        out.flush()?;
        Ok(true)
    }
}
