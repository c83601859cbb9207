//! Write netplug protocol guests in plain Rust.
//!
//! A guest is a `cdylib` built for `wasm32-wasip2`. With this crate it is a
//! function over a [`Connection`], which is `std::io`'s [`Read`](std::io::Read),
//! [`BufRead`](std::io::BufRead) and [`Write`](std::io::Write), exported in one
//! line:
//!
//! ```no_run
//! use netplug_guest::Connection;
//! use std::io::{Read, Write};
//!
//! fn handle(mut conn: Connection) -> netplug_guest::Result {
//!     let greeting = netplug_guest::config::get("greeting")?;
//!     conn.write_all(greeting.as_deref().unwrap_or("HELLO,WORLD").as_bytes())?;
//!     let mut data = Vec::new();
//!     match (&mut conn).take(1024).read_to_end(&mut data) {
//!         Ok(_) => {}
//!         // The host ended an idle client's wait (`--idle-timeout`): the
//!         // record says so; end without an error of the guest's own.
//!         Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(()),
//!         Err(e) => return Err(e.into()),
//!     }
//!     log::info!("{} sent {} bytes", conn.peer_address(), data.len());
//!     Ok(())
//! }
//!
//! netplug_guest::serve!(handle);
//! ```
//!
//! - [`Connection::splice`] relays both ways between two connections inside
//!   the host, for a guest that forwards bytes without reading them (a
//!   proxy: `guest/proxy`).
//! - [`serve!`] exports a server (world `server`): the host calls the
//!   handler once per accepted connection, in a fresh instance. A client
//!   (world `client`) is [`client!`]`(run)`, with `run(args)` getting the
//!   `--connect` address first; it dials with [`dial`].
//! - The handler returns `Result<(), E>` for any `E: Display`: the
//!   convenient [`Result`] of this crate (a boxed error, so `?` takes
//!   `io::Error`s, `String`s and `&str`s), `io::Result<()>`, or
//!   `Result<(), String>`. An `Err` is the guest error the host logs (a
//!   client's makes `host run` exit 1 with it).
//! - The `log` crate's macros (re-exported as [`log`]) go to the host's log,
//!   in the connection's span; a level the host would drop costs one host
//!   call the first time and none after (see the `logger` module source).
//! - [`config::get`] reads the operator's `--config KEY=VALUE` pairs; a
//!   guest that never calls it does not import `wasi:config/store`.
//! - [`kv::Bucket`] is the listener's shared key-value store
//!   (`wasi:keyvalue`, granted with `host run --kv`): `get`, `set`,
//!   `delete`, `exists`, an atomic `increment`, `keys`, and the
//!   compare-and-swap (`update`, `compare_and_swap`, `cas`). A guest that
//!   never opens a bucket does not import `wasi:keyvalue`.
//! - [`testing`] runs protocol code natively over memory, in `cargo test`.
//!
//! # Worlds and bindings
//!
//! The crate carries the WIT (`wit/`, the repository's contract) and
//! generates the bindings of two worlds, `server-with-kv` and `client`
//! (see [`bindings`]). Only their imports are linked into every guest, and
//! imports a guest does not call are dropped when the component is made;
//! the export (`handler` or `run`) comes from whichever of [`serve!`] and
//! [`client!`] the guest invokes. So one crate, without Cargo features,
//! builds guests of either world, and each imports only what it uses.
//!
//! Keep guests synchronous: the bindings use the synchronous ABI.

extern crate self as netplug_guest;

pub mod bindings;
pub mod config;
mod connection;
mod error;
pub mod kv;
mod logger;
pub mod testing;

pub use connection::{Connection, RawSpliced, ReadHalf, Spliced, Transport, WriteHalf, DEFAULT_RECV_SIZE};
pub use error::error_code;
pub use log;

/// Why a connection operation failed, as the host reports it (the WIT
/// `error-code`); `io::Error`s made from it keep it ([`error_code`]).
pub use bindings::server::netplug::protocol::types::ErrorCode;

/// The host's connection resource, as the generated bindings have it. A
/// [`Connection`] wraps one; its methods are the raw WIT calls.
pub type HostConnection = bindings::server::netplug::protocol::types::Connection;

/// A convenient error for handlers: any error, boxed (`?` converts
/// `io::Error`, `String` and `&str` into it).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `Result<T, Error>`, by default `Result<(), Error>`: what a handler or a
/// client's `run` may return.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// Dials `address` (`ip:port`) through the host, which connects only to the
/// addresses it allows (a client's `--connect` target and each
/// `--allow-connect`); any other is `PermissionDenied` (`denied`).
///
/// In native tests (not `wasm32`) it fails with `Unsupported`.
pub fn dial(address: &str) -> std::io::Result<Connection> {
    #[cfg(target_arch = "wasm32")]
    return Ok(Connection::new(bindings::server::netplug::protocol::dialer::connect(address)?));
    #[cfg(not(target_arch = "wasm32"))]
    return Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("dial {address}: no host to dial through in a native build"),
    ));
}

/// Exports a server guest: `serve!(handle)` with `fn handle(conn:
/// Connection) -> Result<(), E>` for any `E: Display` (a closure works
/// too). The guest's component exports `netplug:protocol/handler`, so the
/// host runs it as a server.
#[macro_export]
macro_rules! serve {
    ($handler:expr $(,)?) => {
        const _: () = {
            struct __NetplugServer;
            impl $crate::__private::ServerGuest for __NetplugServer {
                fn handle(conn: $crate::HostConnection) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::handle(conn, $handler)
                }
            }
    $crate::__export_server_with_kv_impl!(__NetplugServer with_types_in $crate::bindings::server);
        };
    };
}

/// Exports a client guest: `client!(run)` with `fn run(args: Vec<String>)
/// -> Result<(), E>` for any `E: Display`, `args` holding the `--connect`
/// address first, then the arguments after `--`. The component exports the
/// `run` function, so the host runs it as a client; it dials with
/// [`dial`], and its stdout is the host's.
#[macro_export]
macro_rules! client {
    ($run:expr $(,)?) => {
        const _: () = {
            struct __NetplugClient;
            impl $crate::__private::ClientGuest for __NetplugClient {
                fn run(
                    args: ::std::vec::Vec<::std::string::String>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::run(args, $run)
                }
            }
    $crate::__export_client_impl!(__NetplugClient with_types_in $crate::bindings::client);
        };
    };
}

/// What the export macros expand to call; not a public API.
#[doc(hidden)]
pub mod __private {
    use crate::{logger, Connection, HostConnection};
    use std::fmt::Display;

    pub use crate::bindings::client::Guest as ClientGuest;
    pub use crate::bindings::server::exports::netplug::protocol::handler::Guest as ServerGuest;

    pub fn handle<F, E>(conn: HostConnection, handler: F) -> Result<(), String>
    where
        F: FnOnce(Connection) -> Result<(), E>,
        E: Display,
    {
        logger::install();
        handler(Connection::new(conn)).map_err(|e| e.to_string())
    }

    pub fn run<F, E>(args: Vec<String>, run: F) -> Result<(), String>
    where
        F: FnOnce(Vec<String>) -> Result<(), E>,
        E: Display,
    {
        logger::install();
        run(args).map_err(|e| e.to_string())
    }
}
