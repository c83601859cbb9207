//! An on-disk cache of compiled guests, so a restart with the same `.wasm`
//! maps the machine code instead of compiling it again.
//!
//! Entries are keyed by the SHA-256 of the component's bytes and the engine's
//! compatibility hash (wasmtime version, target, compiler settings), so a
//! changed guest or an upgraded host never loads a stale entry. The directory
//! is `$NETPLUG_CACHE_DIR`, else `$XDG_CACHE_HOME/netplug`, else
//! `$HOME/.cache/netplug`.
//!
//! A cache entry is native code that the host runs outside the sandbox, so
//! whoever can write it controls the host. The host therefore creates the
//! directory with mode 0700, and uses it (loads or stores) only while the
//! directory and each entry it loads are owned by the user running the host
//! and writable by no one else; otherwise it warns once and compiles in
//! memory. A directory it cannot create (a read-only filesystem) is the same.
//! The directory is created and checked when a `.wasm` is first compiled, not
//! before: a host that serves only `.cwasm` files never touches it, so it
//! runs without a writable home and without a warning.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs::Metadata;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The cache directory, created and checked at its first use.
pub struct Cache {
    dir: PathBuf,
    /// Whether the directory passed the ownership checks, settled (and a
    /// failure reported) at the first load or store.
    usable: OnceLock<bool>,
    /// Set once a problem was reported, so it is reported once.
    warned: AtomicBool,
}

/// Why a path must not be trusted with native code, if it must not.
fn untrusted(meta: &Metadata) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Some(format!("owned by uid {}, not by this user (uid {me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!("writable by others (mode {:o})", meta.mode() & 0o777));
    }
    None
}

impl Cache {
    /// The cache in `dir`. Nothing is read or created yet.
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir, usable: OnceLock::new(), warned: AtomicBool::new(false) }
    }

    /// Creates the directory (mode 0700) if needed and checks it, the first
    /// time only; warns if it cannot be used safely.
    fn usable(&self) -> bool {
        *self.usable.get_or_init(|| {
            let dir = &self.dir;
            let checked = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))
                .and_then(|()| std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display())))
                .and_then(|meta| match untrusted(&meta) {
                    _ if !meta.is_dir() => anyhow::bail!("{} is not a directory", dir.display()),
                    Some(why) => anyhow::bail!("{} is {why}", dir.display()),
                    None => Ok(()),
                });
            match checked {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("compiled-guest cache not used, compiling in memory: {e:#}");
                    false
                }
            }
        })
    }

    fn warn_once(&self, message: std::fmt::Arguments<'_>) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("compiled-guest cache: {message}");
        }
    }

    fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let digest = Sha256::digest(wasm);
        let mut compat = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let mut name = String::with_capacity(90);
        for byte in digest {
            name.push_str(&format!("{byte:02x}"));
        }
        name.push_str(&format!("-{:016x}.cwasm", compat.finish()));
        self.dir.join(name)
    }

    /// Returns the cached compilation of `wasm`, if there is a usable one.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        if !self.usable() {
            return None;
        }
        let path = self.entry_path(engine, wasm);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if let Some(why) = untrusted(&meta).or_else(|| (!meta.is_file()).then(|| "not a file".to_string())) {
            self.warn_once(format_args!("not loading {}: it is {why}; compiling in memory", path.display()));
            return None;
        }
        // SAFETY: the entry holds native code, which wasmtime maps and runs
        // as is. It is trusted because the directory and the file are owned
        // by this user and writable by no one else (checked above), so only
        // this user's own hosts wrote it, from `Component::serialize` of an
        // engine with this configuration (its name carries the engine's
        // compatibility hash); wasmtime still checks the header and refuses
        // a file from another version or configuration.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                self.warn_once(format_args!("ignoring unusable entry {}: {e}", path.display()));
                None
            }
        }
    }

    /// Saves a compilation for next time. Written to a private temporary
    /// file and renamed, so a concurrent reader never sees half a file. A
    /// cache that cannot be written only costs the next start its time.
    pub fn store(&self, engine: &Engine, wasm: &[u8], component: &Component) {
        if !self.usable() {
            return;
        }
        if let Err(e) = self.try_store(engine, wasm, component) {
            self.warn_once(format_args!("{e:#}"));
        }
    }

    fn try_store(&self, engine: &Engine, wasm: &[u8], component: &Component) -> anyhow::Result<()> {
        use std::io::Write;
        let path = self.entry_path(engine, wasm);
        let bytes =
            component.serialize().map_err(anyhow::Error::from).context("cannot serialize the compiled guest")?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    #[cfg(test)]
    fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netplug-cache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_new_directory_is_private() {
        let dir = temp_dir("new");
        let cache = Cache::new(dir.join("nested"));
        assert!(!cache.dir().exists(), "not created before its first use");
        assert!(cache.usable());
        let mode = std::fs::metadata(cache.dir()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = temp_dir("shared");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!Cache::new(dir.clone()).usable());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Cache::new(dir.clone()).usable(), "0755 is not writable by others");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_entry_others_can_write_is_not_loaded() {
        let dir = temp_dir("entry");
        let cache = Cache::new(dir.clone());
        let engine = crate::guest::engine::for_inspection().unwrap();
        // The smallest component: compiles in microseconds.
        let wasm = b"\0asm\x0d\0\x01\0";
        let component = Component::new(&engine, wasm).unwrap();
        cache.store(&engine, wasm, &component);
        assert!(cache.load(&engine, wasm).is_some(), "a private entry loads");
        let entry = cache.entry_path(&engine, wasm);
        assert_eq!(std::fs::metadata(&entry).unwrap().mode() & 0o777, 0o600);
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(cache.load(&engine, wasm).is_none(), "a world-writable entry does not");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
