//! `bench`: the end-to-end benchmark behind `scripts/bench.sh`.
//!
//! `bench run` measures, on one emulator and side by side, the real `publisher` and
//! `pipeline` binaries in each mode against a plaintext floor: the same Pub/Sub client
//! code (`bus::send::Sender`, `runner::run`) with no envelope, played by this binary's
//! own `plain-publish` and `plain-pipeline` roles. Every case checks that the counts
//! are exact and the run fails otherwise.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

mod hostile;
mod inproc;
mod measure;
mod output;
mod plain;
mod run;
mod texts;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark and print its tables.
    Run(run::Options),
    /// The pipeline's core alone, in this process, fed pre-sealed messages.
    Pipeline(inproc::Options),
    /// The plaintext floor's publisher: each stdin line published as it is.
    PlainPublish(plain::PublishOptions),
    /// The plaintext floor's pipeline: `runner::run` with no envelope to open.
    PlainPipeline(plain::PipelineOptions),
}

// The same allocator as `publisher` and `pipeline`, so that the floor is comparable.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let command = Cli::parse().command;
    // `bench pipeline` builds a runtime per worker count; the rest share one.
    if let Command::Pipeline(options) = command {
        return inproc::run(options);
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        match command {
            Command::Run(options) => run::run(options).await,
            Command::PlainPublish(options) => plain::publish(options).await,
            Command::PlainPipeline(options) => plain::pipeline(options).await,
            Command::Pipeline(_) => unreachable!("run above"),
        }
    })
}
