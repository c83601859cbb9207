//! `host run GUEST`: a server guest is served on `--port` as a one-listener
//! `host serve` (`runtime/server.rs`) until SIGINT or SIGTERM; a client
//! guest is run once against `--connect` (`runtime/client.rs`).

use crate::config::flags::RunCommand;
use crate::config::serve::{ClientConfig, ServeConfig};
use crate::guest::{engine, load};
use crate::runtime::server::{self, Server};
use crate::runtime::{client, shutdown};
use anyhow::Result;

pub fn run(cmd: RunCommand) -> Result<()> {
    let tokio = server::async_runtime()?;
    if cmd.connect.is_some() {
        let config = ClientConfig::from_run(&cmd)?;
        return tokio.block_on(client::run_once(config));
    }
    let Some(config) = ServeConfig::from_run(&cmd)? else { return Err(neither(&cmd)) };
    tokio.block_on(async {
        let server = Server::bind(config)?;
        server.run(shutdown::signal()?).await
    })
}

/// Neither `--port` nor `--connect`: what the guest needs, by its world.
fn neither(cmd: &RunCommand) -> anyhow::Error {
    let name = load::display_name(&cmd.guest);
    let world = engine::for_inspection()
        .and_then(|engine| load::load(&engine, &cmd.guest, None).and_then(|c| load::world_of(&engine, &c, &cmd.guest)));
    match world {
        Ok(load::World::Server) => {
            anyhow::anyhow!("{name} is a server guest: give --port to serve it (0 picks a free port)")
        }
        Ok(load::World::Client) => anyhow::anyhow!("{name} is a client guest: give --connect HOST:PORT to run it"),
        Err(e) => e,
    }
}
