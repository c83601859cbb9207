//! `host bundle`'s provider: what a netplug server guest imports
//! (`types`, `log`, `dialer`, `wasi:config/store`), implemented over the
//! standard WASI 0.2 interfaces a stock runtime has (`wasi:sockets`,
//! `wasi:io`, `wasi:clocks`, stderr), and the listening socket the driver
//! accepts from. One instance serves one connection at a time, so the
//! state below (the settings, the listener, the current peer) is global.

mod address;
mod config;
mod connection;
mod dial;
mod listen;
mod log;
mod relay;

wit_bindgen::generate!({
    path: ["../../../wit", "../wit"],
    world: "netplug:bundle/provider",
    generate_all,
});

/// The component's one export type: every interface is implemented on it,
/// each in the file of its job.
struct Provider;

export!(Provider);
