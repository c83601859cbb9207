//! The `connection` resource of `netplug:protocol/types`: a host-owned TCP
//! stream that a guest reads and writes, with every wait bounded and every
//! byte counted against the connection's quotas.
//!
//! The interface is linked by hand (`link`) rather than through the
//! generated `Host` traits, because `send` and `recv` move bulk bytes
//! between the socket and guest memory without a copy through a host buffer
//! (`io.rs`, `lower.rs`), which the generated signatures cannot express.
//! `wait` (`wait.rs`), with `try-recv` and `try-send`, lets one guest serve
//! several connections at once; `splice` (`splice.rs`) relays between two
//! inside the host.

mod io;
mod lower;
mod splice;
mod wait;

pub(crate) use io::{bounded, report_eviction, report_timeout, WaitTimer, Waited};

use crate::imports::bindings::server::netplug::protocol::types::Readiness;
use crate::imports::bindings::ErrorCode;
use crate::imports::state::GuestState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceType, WasmList};
use wasmtime::StoreContextMut;

/// The instance name of the `types` interface in the component model.
const TYPES_INSTANCE: &str = "netplug:protocol/types@0.1.0";

pub struct Connection {
    /// Shared so the socket can be read while guest memory is borrowed
    /// (see `lower.rs`); nothing else holds it.
    pub(crate) stream: Arc<TcpStream>,
    peer: SocketAddr,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) write_closed: bool,
    /// Whether the guest has answered what it last received (its last
    /// successful call was a `send`): a `recv` then waits for a new request,
    /// which is where shutdown may end a connection.
    answered: bool,
    /// Set once a send or recv failed (timed out, reset, closed...): the
    /// stream's state is then unknown (a send may have been cut short), so
    /// every later call fails at once with the same code instead of waiting
    /// again.
    pub(crate) broken: Option<ErrorCode>,
    /// Dialed by the guest (counted against its resource cap), rather than
    /// accepted by the host.
    pub(crate) dialed: bool,
}

impl Connection {
    pub fn accepted(stream: TcpStream, peer: SocketAddr) -> Self {
        Connection {
            stream: Arc::new(stream),
            peer,
            bytes_in: 0,
            bytes_out: 0,
            write_closed: false,
            answered: false,
            broken: None,
            dialed: false,
        }
    }

    pub fn dialed(stream: TcpStream, peer: SocketAddr) -> Self {
        Connection { dialed: true, ..Connection::accepted(stream, peer) }
    }
}

pub(crate) fn code_for(err: &std::io::Error) -> ErrorCode {
    use std::io::ErrorKind::*;
    match err.kind() {
        ConnectionReset | ConnectionAborted => ErrorCode::Reset,
        BrokenPipe | NotConnected | UnexpectedEof => ErrorCode::Closed,
        ConnectionRefused => ErrorCode::Refused,
        TimedOut => ErrorCode::TimedOut,
        PermissionDenied => ErrorCode::Denied,
        _ => ErrorCode::Other,
    }
}

/// Links the `connection` resource and its methods.
///
/// In four groups by what the calls do, registered in the order the
/// interface lists them: the resource's destructor, byte transfer on one
/// connection, calls that span several, and the address getters.
pub fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut types = linker.instance(TYPES_INSTANCE)?;
    link_resource(&mut types)?;
    link_transfer(&mut types)?;
    link_multiplexing(&mut types)?;
    link_addresses(&mut types)
}

/// The `connection` resource, whose destructor gives back what the
/// connection counted against: the instance's live connections and, for a
/// dialed one, the guest's dial cap.
fn link_resource(types: &mut LinkerInstance<'_, GuestState>) -> wasmtime::Result<()> {
    types.resource("connection", ResourceType::host::<Connection>(), |mut store, rep| {
        let state = store.data_mut();
        let c = state.table.delete(Resource::<Connection>::new_own(rep))?;
        state.connections.dropped(&c);
        // Dropping the stream closes the socket.
        Ok(())
    })
}

/// The calls that move bytes on one connection: `send` and `recv`, which
/// wait (async, and copy straight between the socket and guest memory), then
/// `shutdown`, `try-recv` and `try-send`, which never wait.
fn link_transfer(types: &mut LinkerInstance<'_, GuestState>) -> wasmtime::Result<()> {
    types.func_wrap_async(
        "[method]connection.send",
        |mut store: StoreContextMut<'_, GuestState>, (conn, data): (Resource<Connection>, WasmList<u8>)| {
            Box::new(async move { io::send_from_guest(&mut store, conn, data).await.map(|r| (r,)) })
        },
    )?;
    types.func_wrap_async(
        "[method]connection.recv",
        |mut store: StoreContextMut<'_, GuestState>, (conn, max): (Resource<Connection>, u32)| {
            Box::new(async move {
                let rep = conn.rep();
                let received = store.data_mut().recv_head(&conn, max).await?;
                Ok((received.map(|received| lower::RecvIntoGuest::new(received, rep)),))
            })
        },
    )?;
    types.func_wrap(
        "[method]connection.shutdown",
        |mut store: StoreContextMut<'_, GuestState>, (conn,): (Resource<Connection>,)| {
            let c = store.data_mut().table.get_mut(&conn)?;
            if c.write_closed {
                return Ok((Ok(()),));
            }
            c.write_closed = true;
            let result = socket2::SockRef::from(&*c.stream).shutdown(std::net::Shutdown::Write);
            Ok((result.map_err(|e| code_for(&e)),))
        },
    )?;
    types.func_wrap(
        "[method]connection.try-recv",
        |mut store: StoreContextMut<'_, GuestState>, (conn, max): (Resource<Connection>, u32)| {
            let rep = conn.rep();
            let received = store.data_mut().try_recv_head(&conn, max)?;
            Ok((received.map(|r| r.map(|received| lower::RecvIntoGuest::new(received, rep))),))
        },
    )?;
    types.func_wrap(
        "[method]connection.try-send",
        |mut store: StoreContextMut<'_, GuestState>, (conn, data): (Resource<Connection>, WasmList<u8>)| {
            Ok((io::try_send_from_guest(&mut store, conn, data)?,))
        },
    )
}

/// The free functions over several connections: `wait` (`wait.rs`), for a
/// guest that serves several at once, and `splice` (`splice.rs`), a relay
/// between two that stays in the host.
fn link_multiplexing(types: &mut LinkerInstance<'_, GuestState>) -> wasmtime::Result<()> {
    types.func_wrap_async(
        "wait",
        |mut store: StoreContextMut<'_, GuestState>, (watched,): (Vec<(Resource<Connection>, Readiness)>,)| {
            Box::new(async move { wait::wait(&mut store, watched).await.map(|r| (r,)) })
        },
    )?;
    types.func_wrap_async(
        "splice",
        |mut store: StoreContextMut<'_, GuestState>, (a, b): (Resource<Connection>, Resource<Connection>)| {
            Box::new(async move { splice::splice(&mut store, a, b).await.map(|r| (r,)) })
        },
    )
}

/// The connection's two ends, as text.
fn link_addresses(types: &mut LinkerInstance<'_, GuestState>) -> wasmtime::Result<()> {
    types.func_wrap(
        "[method]connection.peer-address",
        |store: StoreContextMut<'_, GuestState>, (conn,): (Resource<Connection>,)| {
            // Asked for by most guests, once per connection: written
            // without core::fmt's formatting of each number.
            let peer = store.data().table.get(&conn)?.peer;
            Ok((crate::ops::log_format::Addr(peer).to_string(),))
        },
    )?;
    types.func_wrap(
        "[method]connection.local-address",
        |store: StoreContextMut<'_, GuestState>, (conn,): (Resource<Connection>,)| {
            // Asked for rarely, so read from the socket on demand rather than
            // paid for on every accept.
            let c = store.data().table.get(&conn)?;
            Ok((c.stream.local_addr().map(|a| crate::ops::log_format::Addr(a).to_string()).unwrap_or_default(),))
        },
    )
}

/// The guest's connection resources as the instance counts them: how many
/// are alive (an instance is reused only if it let go of all of them), how
/// many it dialed (`--max-resources`), and the accepted one, whose byte
/// counts its record reports.
#[derive(Default)]
pub struct Connections {
    live: u32,
    dialed: u32,
    /// The accepted connection's resource.
    accepted: Option<u32>,
    /// Its byte counts, once the guest dropped it.
    accepted_bytes: Option<(u64, u64)>,
}

impl Connections {
    /// The connection the listener accepted, handed to the guest.
    pub fn accepted(&mut self, rep: u32) {
        self.live += 1;
        self.accepted = Some(rep);
    }

    /// A connection the guest dialed.
    pub fn dialed_one(&mut self) {
        self.live += 1;
        self.dialed += 1;
    }

    /// Connections the guest holds that it dialed itself.
    pub fn dialed(&self) -> u32 {
        self.dialed
    }

    /// Whether the guest let go of every connection.
    pub fn all_closed(&self) -> bool {
        self.live == 0
    }

    fn dropped(&mut self, c: &Connection) {
        self.live -= 1;
        if c.dialed {
            self.dialed -= 1;
        } else {
            self.accepted_bytes = Some((c.bytes_in, c.bytes_out));
        }
    }

    /// The accepted connection's bytes in and out so far.
    pub fn accepted_bytes(&self, table: &wasmtime::component::ResourceTable) -> (u64, u64) {
        if let Some(bytes) = self.accepted_bytes {
            return bytes;
        }
        let Some(rep) = self.accepted else { return (0, 0) };
        table.get(&Resource::<Connection>::new_borrow(rep)).map(|c| (c.bytes_in, c.bytes_out)).unwrap_or((0, 0))
    }

    /// For an instance that serves another connection.
    pub fn start(&mut self) {
        self.accepted = None;
        self.accepted_bytes = None;
    }
}
