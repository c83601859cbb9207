//! Rust bindings for the two worlds of `wit/netplug.wit`.
//!
//! Both worlds share `types`, `log` and `dialer`; the client bindings reuse
//! the server's modules so that one `Connection` type and one set of host
//! trait impls serve both.

pub mod server {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "server",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "netplug:protocol/types.connection": crate::imports::connection::Connection,
        },
    });
}

pub mod client {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "client",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "netplug:protocol/types": super::server::netplug::protocol::types,
            "netplug:protocol/log": super::server::netplug::protocol::log,
            "netplug:protocol/dialer": super::server::netplug::protocol::dialer,
        },
    });
}

pub use server::netplug::protocol::log::Level;
pub use server::netplug::protocol::types::ErrorCode;
