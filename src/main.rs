//! The `rollout` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    rollout::cli::main(rollout::cli::Cli::parse())
}
