//! `host`: the command line. Everything else is in the `netplug` library.

use clap::Parser;
use netplug::cli::{Cli, Command};
use netplug::config::RunConfig;
use std::process::ExitCode;

/// Every connection instantiates its guest anew, which makes many small,
/// short-lived allocations across threads; mimalloc serves them with less
/// CPU than glibc's malloc (measured about 8% per exchange at 256
/// concurrent), for about 1 KiB more per idle connection.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // wasmtime attaches a Rust backtrace to every internal error when
    // RUST_BACKTRACE is set, and some are routine (a pool slot still waiting
    // to be decommitted): capturing one costs more than a whole connection.
    // Guest faults are reported with wasm backtraces (`--verbose`) instead.
    // Set before any thread starts; an explicit RUST_LIB_BACKTRACE wins.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let result = match cli.command {
        Command::Run(cmd) => netplug::logging::init(cmd.log.log_level)
            .and_then(|()| RunConfig::from_cli(*cmd))
            .and_then(netplug::run::run),
        Command::Serve(cmd) => netplug::logging::init(cmd.log.log_level).and_then(|()| netplug::serve::serve(cmd)),
        Command::Compile(cmd) => netplug::compile::run(&cmd),
        Command::Inspect(cmd) => netplug::inspect::run(&cmd.guest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` as clap prints them; any other error as one line
/// naming what is wrong (`--help` has the rest).
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let sub = std::env::args()
                .nth(1)
                .filter(|a| ["run", "serve", "compile", "inspect"].contains(&a.as_str()))
                .unwrap_or_default();
            eprintln!("{first} (see `host {sub} --help`)");
            ExitCode::from(2)
        }
    }
}
