//! `host serve CONFIG.toml`: the listeners of a configuration file in one
//! process (`runtime/server.rs`), until SIGINT or SIGTERM. SIGHUP reads the
//! file again and, if all of it checks (every key, every guest, every new
//! address), applies the difference (`runtime/supervisor.rs`); otherwise
//! one line says what is wrong and nothing changes.

use crate::config::file::ServeFile;
use crate::config::flags::ServeCommand;
use crate::runtime::server::{self, Server};
use crate::runtime::shutdown;
use anyhow::Result;

pub fn serve(cmd: ServeCommand) -> Result<()> {
    let file = ServeFile::read(&cmd.config)?;
    let path = file.path.clone();
    let config = file.into_config(&cmd)?;
    if cmd.check {
        let names = server::check(config)?;
        println!("{}: ok, {} listener(s): {}", path.display(), names.len(), names.join(", "));
        return Ok(());
    }
    let tokio = server::async_runtime()?;
    tokio.block_on(async {
        let server = Server::bind(config)?;
        server.run(shutdown::signal()?).await
    })
}
