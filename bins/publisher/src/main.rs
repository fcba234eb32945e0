//! `publisher`: seals messages under a tenant's KMS key and publishes them to the shared
//! topic. Never publishes a message unprotected.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]

mod args;
mod keyring;
mod publish;
mod texts;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, KeyringCommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli::report::exit(run(&mut cli).await)
}

async fn run(cli: &mut Cli) -> anyhow::Result<ExitCode> {
    if !cli.common.start::<Cli>()? {
        return Ok(ExitCode::SUCCESS);
    }
    match cli.keyring.take() {
        Some(KeyringCommand::Keyring { action, kms, keyring }) => {
            let path = match KeyringCommand::path(keyring, kms) {
                Ok(path) => path,
                Err(error) => {
                    use clap::CommandFactory as _;
                    Cli::command().error(clap::error::ErrorKind::ArgumentConflict, error).exit()
                }
            };
            keyring::run(action, path).await.map(|()| ExitCode::SUCCESS)
        }
        None => publish::run(cli).await,
    }
}
