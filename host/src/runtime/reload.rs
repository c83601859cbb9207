//! Reloading a listener's guest: what triggers it (SIGHUP, and with
//! `--watch` a change of the file) and what it does. A reload that fails
//! (not WebAssembly, a half-written file, another world, a refused import,
//! a compile error) leaves the current generation serving and logs one
//! line naming the file and the reason; the next good file is picked up.

use crate::guest::cache::Cache;
use crate::guest::linker::Runtime;
use crate::guest::load::{self, Admitted, KvGrant, World};
use crate::imports::bindings::server::ServerPre;
use crate::imports::state::Policy;
use crate::runtime::generation::{Current, Generation};
use anyhow::{bail, Context, Result};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Editors and `cp` write a file in several steps: a change is acted on
/// once the file has been quiet this long.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Everything needed to turn the guest file into a generation.
pub struct Loader {
    /// The engine and linker it loads with: the process's current ones,
    /// replaced when the pool is renewed (`move_to`).
    runtime: Mutex<Runtime>,
    /// Shared by every listener of the process.
    pub cache: Option<Arc<Cache>>,
    pub path: PathBuf,
    pub grants: Vec<String>,
    /// How the subcommand grants `wasi:keyvalue`, for a refusal to name.
    pub kv_grant: KvGrant,
    pub policy: Arc<Policy>,
    /// The SHA-256 of the bytes the current generation was loaded from: a
    /// trigger that finds the same bytes changes nothing.
    loaded: Mutex<[u8; 32]>,
    /// Held while a generation is made current, so two triggers at once
    /// (a file change and SIGHUP) number and install theirs in turn.
    installing: tokio::sync::Mutex<()>,
}

impl Loader {
    pub fn new(
        runtime: Runtime,
        cache: Option<Arc<Cache>>,
        path: PathBuf,
        grants: Vec<String>,
        kv_grant: KvGrant,
        policy: Arc<Policy>,
    ) -> Self {
        Loader {
            runtime: Mutex::new(runtime),
            cache,
            path,
            grants,
            kv_grant,
            policy,
            loaded: Mutex::new([0; 32]),
            installing: Default::default(),
        }
    }

    /// Loads the guest file as generation `id`, or says why it cannot serve.
    pub fn load(&self, id: u64) -> Result<Generation> {
        let admitted = self.admit()?;
        self.generation(id, &admitted.component, &admitted.bytes)
    }

    /// Reads, compiles and checks the guest file (a server guest importing
    /// only what this listener grants), or says why it cannot serve.
    pub fn admit(&self) -> Result<Admitted> {
        let engine = self.runtime.lock().unwrap().engine.clone();
        let admitted = load::admit(&engine, &self.path, self.cache.as_deref(), &self.grants, self.kv_grant)?;
        if admitted.world == World::Client {
            let name = load::display_name(&self.path);
            match self.kv_grant {
                // `host run GUEST --port N`: the same command runs it.
                KvGrant::Run => bail!("{name} is a client guest: give --connect HOST:PORT to run it"),
                _ => bail!("{name} is a client guest; a listener serves a server guest"),
            }
        }
        Ok(admitted)
    }

    /// Links an admitted component (world and imports checked) read from
    /// `bytes` as generation `id`.
    pub fn generation(&self, id: u64, component: &Component, bytes: &[u8]) -> Result<Generation> {
        let generation = self.link(id, component)?;
        *self.loaded.lock().unwrap() = Sha256::digest(bytes).into();
        Ok(generation)
    }

    /// Links `component` as generation `id` on the current engine, moving
    /// it there first if it was compiled for another (one replaced by a
    /// renewed pool since).
    fn link(&self, id: u64, component: &Component) -> Result<Generation> {
        let name = load::display_name(&self.path);
        let Runtime { engine, linker } = self.runtime.lock().unwrap().clone();
        let moved;
        let component = if Engine::same(component.engine(), &engine) {
            component
        } else {
            let compiled =
                component.serialize().map_err(anyhow::Error::from).context("cannot copy a compiled guest")?;
            // SAFETY: the bytes were serialized just now by this process,
            // from a component an engine of the same configuration compiled.
            moved = unsafe { Component::deserialize(&engine, &compiled) }
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot move guest {name} to the renewed pool"))?;
            &moved
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot link guest {name}"))?;
        let pre = ServerPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{name} does not match the server world"))?;
        Ok(Generation::new(id, name, pre, self.policy.clone(), engine))
    }

    /// Loads with `runtime` from now on, and moves the current generation
    /// there (same number, same compiled guest): the pool was renewed.
    pub async fn move_to(&self, current: &Current, runtime: Runtime) -> Result<()> {
        let _installing = self.installing.lock().await;
        *self.runtime.lock().unwrap() = runtime;
        let serving = current.get();
        current.rebase(self.link(serving.id, serving.pool.component())?);
        Ok(())
    }

    /// Whether the file still holds the bytes of the current generation.
    pub fn unchanged(&self) -> bool {
        match std::fs::read(&self.path) {
            Ok(bytes) => <[u8; 32]>::from(Sha256::digest(&bytes)) == *self.loaded.lock().unwrap(),
            Err(_) => false,
        }
    }
}

/// Reloads when the guest file changes, until the returned task is aborted
/// (a listener with `--watch` or `watch = true`; SIGHUP and `POST /reload`
/// are the server's, see `runtime/server.rs`).
pub fn spawn_watch(loader: Arc<Loader>, current: Arc<Current>) -> Result<tokio::task::JoinHandle<()>> {
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
    let watcher = watch_file(&loader.path, changed_tx)?;
    Ok(tokio::spawn(
        async move {
            // Owned by the task: dropping it would stop the notifications.
            let _watcher = watcher;
            while let Some(()) = changed.recv().await {
                // Wait until the writes stop.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
                if !loader.unchanged() {
                    let _ = reload(&loader, &current, "file change").await;
                }
            }
        }
        // Its lines carry the listener's span.
        .in_current_span(),
    ))
}

/// Loads the next generation off the async workers (compiling is CPU work)
/// and makes it current, or logs why not. Returns the line it logged: the
/// outcome, or the error.
pub async fn reload(loader: &Arc<Loader>, current: &Current, trigger: &str) -> Result<String, String> {
    let _installing = loader.installing.lock().await;
    let serving = current.get().id;
    let next = serving + 1;
    let load = loader.clone();
    let loaded = tokio::task::spawn_blocking(move || load.load(next)).await;
    let path = loader.path.display();
    let result = match loaded {
        Ok(Ok(generation)) => {
            let guest = generation.guest.clone();
            current.replace(generation);
            let line =
                format!("{trigger}: generation {next} serving {guest}; generation {serving} finishes its connections");
            tracing::info!("{line}");
            Ok(line)
        }
        Ok(Err(e)) => Err(format!("{trigger}: reload of {path} failed, generation {serving} keeps serving: {e:#}")),
        Err(e) => Err(format!("{trigger}: reload of {path} failed, generation {serving} keeps serving: {e}")),
    };
    if let Err(line) = &result {
        tracing::error!("{line}");
    }
    crate::ops::metrics::global().reloaded(result.is_ok());
    result
}

/// Makes a guest already admitted (by a reload of `host serve`'s file) the
/// next generation, or logs why it cannot be.
pub async fn install(loader: &Loader, current: &Current, admitted: Admitted, trigger: &str) {
    let _installing = loader.installing.lock().await;
    let serving = current.get().id;
    let next = serving + 1;
    match loader.generation(next, &admitted.component, &admitted.bytes) {
        Ok(generation) => {
            let guest = generation.guest.clone();
            current.replace(generation);
            tracing::info!(
                "{trigger}: generation {next} serving {guest}; generation {serving} finishes its connections"
            );
        }
        Err(e) => tracing::error!(
            "{trigger}: reload of {} failed, generation {serving} keeps serving: {e:#}",
            loader.path.display()
        ),
    }
}

/// Watches the guest file's directory (so that a rename over the file is
/// seen as well as writes into it) and sends a unit for each event that
/// touches the file.
fn watch_file(path: &Path, changed: mpsc::UnboundedSender<()>) -> Result<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_os_string()).context("the guest path has no file name")?;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())) {
            let _ = changed.send(());
        }
    })
    .context("cannot start watching files")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {} for changes", dir.display()))?;
    Ok(watcher)
}
