//! `berth`: plan placements, explain one service, or plan a failover, from `docker inspect`
//! JSON or the compact TOML form. Thin: parse arguments, load files, call the engine, print.

use std::process::ExitCode;

use berth_daemon::cli;
use clap::Parser;

fn main() -> ExitCode {
    // clap exits 2 on a usage error, but 2 means "some tasks pending" here: usage errors are
    // bad input, 1, like every other.
    let args = match berth_volume_client::config_file::args(
        &<cli::Args as clap::CommandFactory>::command(),
        std::env::args_os().collect(),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth: error: {e}");
            return ExitCode::from(1);
        }
    };
    let args = match cli::Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match cli::run(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("berth: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
