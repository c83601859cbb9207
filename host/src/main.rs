//! `host`: the command line. Everything else is in the `netplug` library.

use clap::Parser;
use netplug::config::flags::{Cli, Command, LogFormat};
use std::process::ExitCode;

mod allocator;

/// mimalloc (see allocator.rs).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> ExitCode {
    // wasmtime attaches a Rust backtrace to every internal error when
    // RUST_BACKTRACE is set, and some are routine (a pool slot still waiting
    // to be decommitted): capturing one costs more than a whole connection.
    // Guest faults are reported with wasm backtraces (`--verbose`) instead.
    // Set before any thread starts; an explicit RUST_LIB_BACKTRACE wins.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    netplug::ops::heap::set_release(release_heap);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let serves = match &cli.command {
        Command::Run(_) => true,
        Command::Serve(cmd) => !cmd.check,
        Command::Compile(_) | Command::Bundle(_) | Command::Inspect(_) | Command::Wit(_) => false,
    };
    if !serves {
        stop_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Run(cmd) => {
            let log = &cmd.log;
            let json = log.log_format == Some(LogFormat::Json);
            netplug::ops::logging::init(log.log_level.into(), json, log.access_log.unwrap_or(true))
                .and_then(|()| netplug::commands::run::run(*cmd))
        }
        Command::Serve(cmd) => {
            // The file's `log-format` and `access-log` apply unless the
            // flags are given; a file that does not read is reported by
            // `serve` itself.
            let file = netplug::config::file::ServeFile::read(&cmd.config).ok();
            let log = &cmd.log;
            let format = log.log_format.or(file.as_ref().and_then(|f| f.log_format)).unwrap_or_default();
            let access_log = log.access_log.or(file.as_ref().and_then(|f| f.access_log)).unwrap_or(true);
            netplug::ops::logging::init(log.log_level.into(), format == LogFormat::Json, access_log)
                .and_then(|()| netplug::commands::serve::serve(cmd))
        }
        Command::Compile(cmd) => netplug::commands::compile::run(&cmd),
        Command::Bundle(cmd) => netplug::commands::bundle::run(&cmd),
        Command::Inspect(cmd) => netplug::commands::inspect::run(&cmd.guest),
        Command::Wit(cmd) => netplug::commands::wit::run(&cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns the calling thread's unused heap pages to the system (and
/// whatever else mimalloc holds free).
fn release_heap() {
    // SAFETY: mi_collect only walks mimalloc's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Restores SIGPIPE's default action, which Rust's runtime sets to ignore,
/// for the subcommands that only print: a reader that goes away (`host
/// inspect GUEST | head -1`) then ends them as it ends any Unix filter,
/// where `println!` would panic on EPIPE and exit 101. `host run` and `host
/// serve` keep it ignored: they write to sockets, and a peer that closes
/// one must end that connection, not the process (their own lines on stdout
/// go through `ops::listen::announce`). `--help` and `--version` need nothing:
/// clap reports a failed write, which `clap_exit` does not look at.
fn stop_on_closed_stdout() {
    // SAFETY: setting a standard signal's disposition to `SIG_DFL` installs
    // no handler and touches no memory; no other thread exists yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
                .filter(|a| ["run", "serve", "compile", "bundle", "inspect", "wit"].contains(&a.as_str()))
                .unwrap_or_default();
            eprintln!("{first} (see `host {sub} --help`)");
            ExitCode::from(2)
        }
    }
}
