//! A test guest: the proxy as it was before `splice`, a relay to the
//! configured `upstream` (`--config upstream=HOST:PORT`) through `wait`,
//! `try-recv` and `try-send`, so those stay tested end to end
//! (`tests/proxy.rs`). Half-closes are passed on; one line at the end
//! logs the bytes moved each way.
//!
//! The guest is single-threaded: it waits on both connections at once with
//! `wait`, and moves bytes with `try-recv` and `try-send`, which never
//! block, so a direction whose destination is full holds only itself up.
//! Bytes are not copied in the guest: the list `try-recv` returns is sent
//! from as it is, and kept until the destination has taken all of it.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "server-with-config",
    with: { "wasi:config/store@0.2.0-rc.1": generate },
});

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::dialer;
use netplug::protocol::log::{enabled, log, Level};
use netplug::protocol::types::{wait, Connection, ErrorCode, Readiness};
use wasi::config::store;

/// The most one `try-recv` returns (the host's own per-call cap).
const CHUNK: u32 = 64 * 1024;

/// Full chunks one direction moves before the other gets its turn: enough to
/// skip most waits in a bulk transfer, few enough that neither direction
/// starves the other.
const ROUNDS: usize = 8;

/// The configuration key naming the address to dial.
const UPSTREAM_KEY: &str = "upstream";

/// Which connection an operation failed on, for the error message.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Upstream,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// A failed operation: on which side, what, and the host's code.
struct Failure(Side, &'static str, ErrorCode);

impl Failure {
    fn describe(&self) -> String {
        format!("{} on the {} connection failed: {}", self.1, self.0.name(), self.2.name())
    }
}

/// One direction of the copy.
struct Pipe<'a> {
    src: &'a Connection,
    src_side: Side,
    dst: &'a Connection,
    dst_side: Side,
    /// Bytes received from `src` that `dst` has not all taken yet: the list
    /// `try-recv` returned, and how much of it is sent.
    pending: Vec<u8>,
    sent: usize,
    /// `src` reached end of stream and `dst` was shut down for writing.
    done: bool,
    /// Bytes received from `src` (and so far sent to `dst`, once `pending`
    /// is empty).
    bytes: u64,
}

impl<'a> Pipe<'a> {
    fn new(src: (&'a Connection, Side), dst: (&'a Connection, Side)) -> Self {
        Pipe {
            src: src.0,
            src_side: src.1,
            dst: dst.0,
            dst_side: dst.1,
            pending: Vec::new(),
            sent: 0,
            done: false,
            bytes: 0,
        }
    }

    fn holding(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// What this direction waits for on its source: bytes, unless it holds
    /// some still to send or is done.
    fn wants_from_src(&self) -> Readiness {
        if self.done || self.holding() {
            Readiness::empty()
        } else {
            Readiness::READABLE
        }
    }

    /// What this direction waits for on its destination: room, while it
    /// holds bytes.
    fn wants_from_dst(&self) -> Readiness {
        if self.holding() {
            Readiness::WRITABLE
        } else {
            Readiness::empty()
        }
    }

    /// Whether what `wait` found lets this direction move.
    fn can_move(&self, src_ready: Readiness, dst_ready: Readiness) -> bool {
        src_ready.intersects(self.wants_from_src()) || dst_ready.intersects(self.wants_from_dst())
    }

    /// Moves what can move without waiting: sends what is held, then
    /// receives and sends, up to `ROUNDS` full chunks. Stops when the
    /// destination is full, the source has nothing queued, or a short
    /// chunk says the source was drained; at the source's end of stream it
    /// shuts down the destination's write side.
    fn pump(&mut self) -> Result<(), Failure> {
        for _ in 0..ROUNDS {
            if self.holding() {
                let n = self.dst.try_send(&self.pending[self.sent..]).map_err(|e| Failure(self.dst_side, "send", e))?;
                self.sent += n as usize;
                if self.holding() {
                    return Ok(());
                }
                if self.pending.len() < CHUNK as usize {
                    // The source had no more queued when it was read.
                    return Ok(());
                }
            }
            match self.src.try_recv(CHUNK).map_err(|e| Failure(self.src_side, "recv", e))? {
                None => return Ok(()),
                Some(data) if data.is_empty() => {
                    self.dst.shutdown().map_err(|e| Failure(self.dst_side, "shutdown", e))?;
                    self.done = true;
                    return Ok(());
                }
                Some(data) => {
                    self.bytes += data.len() as u64;
                    self.pending = data;
                    self.sent = 0;
                }
            }
        }
        Ok(())
    }
}

/// Copies both ways until both directions are done.
fn relay(up: &mut Pipe<'_>, down: &mut Pipe<'_>, client: &Connection, upstream: &Connection) -> Result<(), Failure> {
    while !(up.done && down.done) {
        let watched = [
            (client, up.wants_from_src() | down.wants_from_dst()),
            (upstream, down.wants_from_src() | up.wants_from_dst()),
        ];
        // A failed wait (timed out) fails every call after it on both
        // connections; name the side the proxy was waiting to hear from.
        let side = if up.done { Side::Upstream } else { Side::Client };
        let ready = wait(&watched).map_err(|e| Failure(side, "wait", e))?;
        let (at_client, at_upstream) = (ready[0], ready[1]);
        if up.can_move(at_client, at_upstream) {
            up.pump()?;
        }
        if down.can_move(at_upstream, at_client) {
            down.pump()?;
        }
    }
    Ok(())
}

struct Relay;

impl Guest for Relay {
    fn handle(client: Connection) -> Result<(), String> {
        // A store error counts as unset, as in the hello guest.
        let Some(address) = store::get(UPSTREAM_KEY).ok().flatten() else {
            return Err(format!("missing configuration `{UPSTREAM_KEY}`: give --config {UPSTREAM_KEY}=HOST:PORT"));
        };
        let upstream =
            dialer::connect(&address).map_err(|e| format!("cannot connect to upstream {address}: {}", e.name()))?;
        let mut up = Pipe::new((&client, Side::Client), (&upstream, Side::Upstream));
        let mut down = Pipe::new((&upstream, Side::Upstream), (&client, Side::Client));
        let outcome = relay(&mut up, &mut down, &client, &upstream);
        let level = if outcome.is_ok() { Level::Info } else { Level::Warn };
        if enabled(level) {
            let end = match &outcome {
                Ok(()) => "both directions ended".to_string(),
                Err(failure) => failure.describe(),
            };
            log(
                level,
                &format!(
                    "{} <-> {address}: {} bytes client to upstream, {} bytes upstream to client; {end}",
                    client.peer_address(),
                    up.bytes,
                    down.bytes
                ),
            );
        }
        outcome.map_err(|failure| failure.describe())
    }
}

export!(Relay);
