//! The Rust bindings generated from `wit/` (a copy of the repository's
//! `wit/`, shipped with this crate).
//!
//! Two worlds are generated, because a component exports exactly one of
//! them and the bindings of a world export all of its exports at once:
//!
//! - [`server`]: the world `server-with-kv`, the imports of every guest
//!   (`log`, `dialer`, `types`, `wasi:config/store`, and
//!   `wasi:keyvalue/store`, `atomics` and `batch` at 0.2.0-draft2) and the
//!   `handler` export that
//!   [`serve!`](crate::serve) instantiates.
//! - [`client`]: the world `client`, whose imports are those of [`server`]
//!   (the same Rust types, through `with`) and whose export is the `run`
//!   function that [`client!`](crate::client) instantiates.
//!
//! Both are generated with `pub_export_macro`, which splits each world's
//! type information in two: this crate carries only the *imports* (which
//! `wit-component` drops when the guest does not call them, so a guest that
//! never reads its configuration does not import `wasi:config/store`, and
//! one that never opens a bucket does not import `wasi:keyvalue`), and
//! the world with its export is emitted by the export macro, in the guest
//! that invokes it. A guest therefore exports `handler` or `run`, never
//! both, and the host tells its world from that.

/// The world `server-with-kv`: every import, and the `handler` export.
pub mod server {
    wit_bindgen::generate!({
        path: "wit",
        world: "server-with-kv",
        with: {
            "wasi:config/store@0.2.0-rc.1": generate,
            "wasi:keyvalue/store@0.2.0-draft2": generate,
            "wasi:keyvalue/atomics@0.2.0-draft2": generate,
            "wasi:keyvalue/batch@0.2.0-draft2": generate,
        },
        pub_export_macro: true,
        default_bindings_module: "$crate::bindings::server",
    });
}

/// The world `client`: the imports of [`server`] and the `run` export.
pub mod client {
    wit_bindgen::generate!({
        path: "wit",
        world: "client",
        with: {
            "netplug:protocol/types@0.1.0": crate::bindings::server::netplug::protocol::types,
            "netplug:protocol/log@0.1.0": crate::bindings::server::netplug::protocol::log,
            "netplug:protocol/dialer@0.1.0": crate::bindings::server::netplug::protocol::dialer,
        },
        pub_export_macro: true,
        default_bindings_module: "$crate::bindings::client",
    });
}
