//! `host`: serves protocol guests (WebAssembly components) over real TCP.

#[macro_use]
mod logging;
mod bindings;
mod cache;
mod cli;
mod client;
mod config;
mod connection;
mod dial;
mod direct_io;
mod guest_log;
mod inspect;
mod limits;
mod outcome;
mod runtime;
mod server;
mod shutdown;
mod state;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use config::RunConfig;
use runtime::World;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

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
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            // One line naming what is wrong; `--help` has the rest.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see `host {} --help`)", subcommand_hint());
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(cmd) => {
            logging::set_max_level(cmd.log_level);
            RunConfig::from_cli(cmd).and_then(run)
        }
        Command::Inspect(cmd) => inspect::run(&cmd.guest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn subcommand_hint() -> String {
    std::env::args().nth(1).filter(|a| a == "run" || a == "inspect").unwrap_or_default()
}

/// `host run`: load the guest, then serve it or run it once by its world.
fn run(config: RunConfig) -> Result<()> {
    let engine = runtime::build_engine(&config.limits)?;
    let component = runtime::load_component(&engine, &config.guest, config.cache_dir.as_deref())?;
    let world = runtime::world_of(&engine, &component, &config.guest)?;
    runtime::check_imports(&engine, &component, &config.guest, &config.grants)?;
    let guest_name = config
        .guest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| config.guest.display().to_string());
    match world {
        World::Server if config.listen.is_none() => {
            bail!("{guest_name} is a server guest: give --port to serve it (0 picks a free port)")
        }
        World::Client if config.connect.is_none() => {
            bail!("{guest_name} is a client guest: give --connect HOST:PORT to run it")
        }
        _ => {}
    }
    let linker = runtime::build_linker(&engine)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link guest {guest_name}"))?;
    let policy = Arc::new(state::Policy {
        limits: config.limits.clone(),
        dial: config.dial,
        verbose: config.verbose,
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _ticker = runtime::EpochTicker::start(&engine);
    match world {
        World::Server => {
            let addr = config.listen.expect("checked above");
            let pre = bindings::server::ServerPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("{guest_name} does not match the server world"))?;
            let service = Arc::new(server::Service::new(pre, policy, guest_name.clone()));
            tokio.block_on(async {
                let listener = server::bind(addr, config.backlog)?;
                let bound = listener.local_addr().context("cannot read the bound address")?;
                // Tests and scripts read this line to find the port.
                println!("listening on {bound}");
                std::io::stdout().flush().ok();
                info!("listener", "serving {guest_name} (world server) on {bound}");
                let shutdown = shutdown::signal()?;
                // The accept loop runs on a worker, beside the connections it
                // spawns, rather than on this thread: handing every new
                // connection across threads costs a wake-up each.
                let serve = server::run(listener, service, shutdown, config.shutdown_timeout);
                tokio::spawn(serve).await.context("the accept loop failed")?
            })
        }
        World::Client => {
            let mut args = vec![config.connect.clone().expect("checked above")];
            args.extend(config.args);
            tokio.block_on(client::run(pre, policy, &guest_name, args))
        }
    }
}
