//! Embeds `host bundle`'s adapter: the two components the guests' workspace
//! builds from `guest/bundle/` (`make guests`, which `make build` runs
//! before building the host) are copied into `OUT_DIR`, where
//! `guest/bundle.rs` includes them. When they are not built yet (`make
//! lint` runs clippy before any build), empty files stand in, so that the
//! host still compiles, and `host bundle` says to run `make build`.
//!
//! `NETPLUG_BUNDLE_ADAPTER_DIR` names another directory holding them (the
//! default is the repository's `target/wasm32-wasip2/release/`).

use std::path::PathBuf;

const ADAPTER: [&str; 2] = ["bundle_provider.wasm", "bundle_driver.wasm"];

fn main() {
    println!("cargo:rerun-if-env-changed=NETPLUG_BUNDLE_ADAPTER_DIR");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("NETPLUG_BUNDLE_ADAPTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/wasm32-wasip2/release"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in ADAPTER {
        let built = dir.join(name);
        println!("cargo:rerun-if-changed={}", built.display());
        let bytes = std::fs::read(&built).unwrap_or_default();
        std::fs::write(out.join(name), bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.join(name).display()));
    }
}
