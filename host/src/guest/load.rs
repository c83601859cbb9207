//! Admitting a guest: read and compile it (through the compiled-guest
//! cache), or load it precompiled (a `.cwasm` from `host compile`); tell its
//! world from its exports, and audit its imports against what the host
//! grants. `host run`, `host compile` and `host inspect` all go through here.

use crate::guest::cache::Cache;
use crate::guest::precompiled;
use anyhow::{bail, Context, Result};
use std::path::Path;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The version of `netplug:protocol` this host speaks (wit/netplug.wit).
pub const PROTOCOL_VERSION: &str = "0.1.0";

/// The export that makes a component a server guest.
pub const HANDLER_EXPORT: &str = "netplug:protocol/handler@0.1.0";
/// The export that makes a component a client guest.
pub const RUN_EXPORT: &str = "run";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    Server,
    Client,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Server => "server",
            World::Client => "client",
        }
    }
}

/// The file name of a guest, for log lines and messages.
pub fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Reads and compiles a guest, naming the file and what is wrong with it.
/// With a cache, a previous compilation of the same bytes is reused.
pub fn load(engine: &Engine, path: &Path, cache: Option<&Cache>) -> Result<Component> {
    load_bytes(engine, path, &read(path)?, cache)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read guest {}", path.display()))
}

/// A guest the host would run: read, compiled, its world told and its
/// imports granted. `bytes` are what it was read from.
pub struct Admitted {
    pub bytes: Vec<u8>,
    pub component: Component,
    pub world: World,
}

/// Admits the guest at `path` (`grants`: the packages of `--grant`), or
/// says in one line why not (`kv`: the subcommand's way to grant the store,
/// which a refusal names). `host run`, `host compile` and every reload go
/// through here.
pub fn admit(engine: &Engine, path: &Path, cache: Option<&Cache>, grants: &[String], kv: KvGrant) -> Result<Admitted> {
    let bytes = read(path)?;
    let component = load_bytes(engine, path, &bytes, cache)?;
    // Before the world: a guest of another protocol version exports
    // another `handler`, and the version is what the operator must hear.
    check_version(engine, &component, path)?;
    let world = world_of(engine, &component, path)?;
    check_imports(engine, &component, path, grants, kv)?;
    Ok(Admitted { bytes, component, world })
}

/// Compiles the bytes read from `path` (named in errors). A precompiled
/// guest, told by its contents whatever its name, is loaded as is and never
/// cached.
pub fn load_bytes(engine: &Engine, path: &Path, bytes: &[u8], cache: Option<&Cache>) -> Result<Component> {
    let shown = path.display();
    if precompiled::is_precompiled(bytes) {
        return precompiled::load(engine, path, bytes);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("{shown} is not a WebAssembly file (it does not start with the \\0asm magic bytes)");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "{shown} is a core WebAssembly module, not a component: build the guest for \
             wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
        );
    }
    if let Some(component) = cache.and_then(|cache| cache.load(engine, bytes)) {
        return Ok(component);
    }
    let component = Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile guest {shown}"))?;
    if let Some(cache) = cache {
        cache.store(engine, bytes, &component);
    }
    Ok(component)
}

/// Tells the worlds apart by the component's exports.
pub fn world_of(engine: &Engine, component: &Component, path: &Path) -> Result<World> {
    let ty = component.component_type();
    let exports: Vec<(String, ComponentItem)> =
        ty.exports(engine).map(|(name, item)| (name.to_string(), item.ty)).collect();
    let serves = exports.iter().any(|(n, i)| n == HANDLER_EXPORT && matches!(i, ComponentItem::ComponentInstance(_)));
    let runs = exports.iter().any(|(n, i)| n == RUN_EXPORT && matches!(i, ComponentItem::ComponentFunc(_)));
    match (serves, runs) {
        (true, false) => Ok(World::Server),
        (false, true) => Ok(World::Client),
        _ => {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{} is neither a server nor a client guest: it exports [{}], expected `{HANDLER_EXPORT}` \
                 (world server) or a `{RUN_EXPORT}` function (world client), but not both",
                path.display(),
                names.join(", ")
            )
        }
    }
}

/// Interfaces a guest may import. Rust's std on wasip2 imports the
/// `wasi:cli`, `wasi:io`, `wasi:clocks` and `wasi:random` ones; with no
/// environment, arguments, preopens or stdin configured they grant nothing
/// beyond a clock, randomness and the stdio that goes to the host log.
/// `wasi:config` exposes only what the operator gave with `--config`.
const GRANTED: &[&str] =
    &["netplug:protocol/", "wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:config/"];

/// The `wasi:keyvalue` interfaces the host links
/// (`imports/keyvalue/draft.rs`, `imports/keyvalue/draft2.rs`), each
/// granted with `--kv`.
const KEYVALUE: &[&str] =
    &["store@0.2.0-draft", "atomics@0.2.0-draft", "store@0.2.0-draft2", "atomics@0.2.0-draft2", "batch@0.2.0-draft2"];

/// Why a guest importing `wasi:keyvalue` is refused without `--kv`; what
/// [`grant`] says, and `host run` and `host inspect` with it.
pub const NEEDS_KV: &str =
    "the shared key-value store is granted only with --kv (memory, a redis:// URL or a database path)";

/// How the subcommand at hand grants `wasi:keyvalue`: refusing a guest that
/// imports it names a flag or key that this subcommand accepts, not another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvGrant {
    /// `host run`: `--kv memory` or `--kv PATH`.
    Run,
    /// `host compile`, which opens no store: `--grant wasi:keyvalue`.
    Compile,
    /// A listener of `host serve`: its `kv` key.
    Serve,
}

impl KvGrant {
    /// Why a guest importing `wasi:keyvalue` is refused without it.
    pub fn refusal(self) -> &'static str {
        match self {
            KvGrant::Run => NEEDS_KV,
            KvGrant::Compile => "the shared key-value store is granted only with --grant wasi:keyvalue",
            KvGrant::Serve => {
                "the shared key-value store is granted only with the listener's `kv` key (`kv = \"memory\"` or a \
                 database path)"
            }
        }
    }
}

/// Whether the host links `name` for guests, and why not when it does not.
/// `extra` holds the packages granted with `--grant`, and `wasi:keyvalue`
/// when `--kv` is given.
pub fn grant(name: &str, extra: &[String]) -> Result<(), &'static str> {
    if version_mismatch(name).is_some() {
        return Err(OTHER_VERSION);
    }
    if GRANTED.iter().any(|prefix| name.starts_with(prefix)) {
        return Ok(());
    }
    if let Some(interface) = name.strip_prefix("wasi:keyvalue/") {
        if !KEYVALUE.contains(&interface) {
            return Err("the host provides wasi:keyvalue/store and wasi:keyvalue/atomics at 0.2.0-draft, and \
                        those and wasi:keyvalue/batch at 0.2.0-draft2");
        }
        return match extra.iter().any(|pkg| pkg == crate::imports::keyvalue::GRANT) {
            true => Ok(()),
            false => Err(NEEDS_KV),
        };
    }
    if extra.iter().any(|pkg| name.starts_with(pkg.as_str()) && name[pkg.len()..].starts_with('/')) {
        return Ok(());
    }
    Err(if name.starts_with("wasi:sockets/") {
        "guests get no sockets of their own; connections come from the host (netplug:protocol/dialer); \
         --grant wasi:sockets loads it with every address denied"
    } else if name.starts_with("wasi:filesystem/") {
        "guests get no filesystem; --grant wasi:filesystem loads it with no directory to open"
    } else if name.starts_with("wasi:http/") {
        "the host does not provide wasi:http; speak HTTP over a netplug connection"
    } else {
        "the host does not provide this interface"
    })
}

/// Why a guest importing or exporting `name` cannot run here, when `name` is
/// an interface of `netplug:protocol` at a version other than this host's
/// (unversioned counts as another version): one phrase naming both.
pub fn version_mismatch(name: &str) -> Option<String> {
    let rest = name.strip_prefix("netplug:protocol/")?;
    let version = rest.split_once('@').map_or("", |(_, version)| version);
    if version == PROTOCOL_VERSION {
        return None;
    }
    let built = if version.is_empty() { "netplug:protocol".to_string() } else { format!("netplug:protocol@{version}") };
    Some(format!(
        "built against {built}; this host speaks {PROTOCOL_VERSION} \u{2014} rebuild the guest with a netplug-guest \
         release for this host"
    ))
}

/// Why `grant` refuses an interface of another `netplug:protocol` version
/// ([`version_mismatch`] has the versions).
pub const OTHER_VERSION: &str = "another version of netplug:protocol than this host's";

/// The first protocol version mismatch among a guest's imports and
/// exports ([`version_mismatch`]).
pub fn protocol_mismatch(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let mut names: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
    names.extend(ty.exports(engine).map(|(name, _)| name.to_string()));
    names.iter().find_map(|name| version_mismatch(name))
}

/// Refuses, in one line naming both versions, a guest built against another
/// version of `netplug:protocol`.
pub fn check_version(engine: &Engine, component: &Component, path: &Path) -> Result<()> {
    match protocol_mismatch(engine, component) {
        Some(why) => bail!("{} is {why}", path.display()),
        None => Ok(()),
    }
}

/// Refuses, naming the import, a guest that needs what the host will not
/// grant (and first, naming both versions, one built against another
/// version of `netplug:protocol`); a refused `wasi:keyvalue` says how `kv`
/// grants it.
pub fn check_imports(engine: &Engine, component: &Component, path: &Path, extra: &[String], kv: KvGrant) -> Result<()> {
    check_version(engine, component, path)?;
    for (name, _) in component.component_type().imports(engine) {
        if let Err(why) = grant(name, extra) {
            let why = if why == NEEDS_KV { kv.refusal() } else { why };
            bail!("{} imports `{name}`, which the host refuses: {why}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/netplug.wit");
        assert!(wit.contains(&format!("package netplug:protocol@{PROTOCOL_VERSION};")));
        assert!(HANDLER_EXPORT.ends_with(&format!("@{PROTOCOL_VERSION}")));
    }

    #[test]
    fn another_protocol_version_is_refused_naming_both() {
        assert_eq!(grant("netplug:protocol/types@0.1.0", &[]), Ok(()));
        assert_eq!(version_mismatch("netplug:protocol/handler@0.1.0"), None);
        assert_eq!(version_mismatch("wasi:io/streams@0.2.6"), None);
        let why = version_mismatch("netplug:protocol/types@0.2.0").unwrap();
        assert_eq!(
            why,
            "built against netplug:protocol@0.2.0; this host speaks 0.1.0 \u{2014} rebuild the guest with a \
             netplug-guest release for this host"
        );
        assert!(!why.contains('\n'));
        assert_eq!(grant("netplug:protocol/types@0.2.0", &[]), Err(OTHER_VERSION));
        assert_eq!(grant("netplug:protocol/log", &[]), Err(OTHER_VERSION));
        assert!(version_mismatch("netplug:protocol/log").unwrap().starts_with("built against netplug:protocol;"));
    }

    #[test]
    fn both_keyvalue_versions_need_kv() {
        let kv = [crate::imports::keyvalue::GRANT.to_string()];
        for name in [
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft2",
            "wasi:keyvalue/batch@0.2.0-draft2",
        ] {
            assert_eq!(grant(name, &kv), Ok(()), "{name}");
            assert_eq!(grant(name, &[]), Err(NEEDS_KV), "{name}");
        }
        for name in
            ["wasi:keyvalue/batch@0.2.0-draft", "wasi:keyvalue/watcher@0.2.0-draft2", "wasi:keyvalue/store@0.1.0"]
        {
            assert!(grant(name, &kv).unwrap_err().contains("0.2.0-draft2"), "{name}");
        }
    }
}
