//! `berth`: plan placements, explain one service, or plan a failover, from `docker inspect`
//! JSON or the compact TOML form. Thin: parse arguments, load files, call the engine, print.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("berth: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
