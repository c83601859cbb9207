//! An on-disk cache of compiled guests, so a restart with the same `.wasm`
//! maps the machine code instead of compiling it again.
//!
//! Entries are keyed by the SHA-256 of the component's bytes and the engine's
//! compatibility hash (wasmtime version, target, compiler settings), so a
//! changed guest or an upgraded host never loads a stale entry. The directory
//! is `$NETPLUG_CACHE_DIR`, else `$XDG_CACHE_HOME/netplug`, else
//! `$HOME/.cache/netplug`.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NETPLUG_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("netplug"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("netplug"))
}

fn entry_path(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    let digest = Sha256::digest(wasm);
    let mut compat = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut name = String::with_capacity(90);
    for byte in digest {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(&format!("-{:016x}.cwasm", compat.finish()));
    dir.join(name)
}

/// Returns the cached compilation of `wasm`, if there is a usable one.
pub fn load(dir: &Path, engine: &Engine, wasm: &[u8]) -> Option<Component> {
    let path = entry_path(dir, engine, wasm);
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `store` below from `Component::serialize`
    // of this same engine configuration (the name carries its compatibility
    // hash), in a directory owned by the user running the host. wasmtime
    // still checks the header and rejects a file from another configuration.
    match unsafe { Component::deserialize_file(engine, &path) } {
        Ok(component) => Some(component),
        Err(e) => {
            warn!("cache", "ignoring unusable cache entry {}: {e}", path.display());
            None
        }
    }
}

/// Saves a compilation for next time. Written to a temporary name and
/// renamed, so a concurrent reader never sees half a file.
pub fn store(dir: &Path, engine: &Engine, wasm: &[u8], component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache dir {}", dir.display()))?;
    let path = entry_path(dir, engine, wasm);
    let bytes = component.serialize().map_err(anyhow::Error::from).context("cannot serialize the compiled guest")?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
