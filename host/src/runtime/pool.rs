//! The instances a listener serves connections with: fresh spares made
//! ahead of time, and (opt-in, `--connections-per-instance`) instances kept
//! to serve another connection. The engine's pooling allocator is sized
//! from `Limits::slots_needed`, since every instance held here takes a slot.

use crate::config::limits::SPARE_INSTANCES;
use crate::imports::bindings::server::{Server, ServerPre};
use crate::imports::state::{new_store, GuestState, Policy, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::Store;

/// A guest instance and its store.
pub struct Instance {
    pub store: Store<GuestState>,
    pub guest: Server,
    /// Connections it has served.
    pub served: u32,
}

pub struct Pool {
    pre: ServerPre<GuestState>,
    policy: Arc<Policy>,
    /// Instances that finished a connection cleanly and may serve another
    /// (only with `--connections-per-instance` above 1).
    idle: Mutex<Vec<Instance>>,
    /// Fresh instances, never used, made ahead of time so that a new
    /// connection does not wait for instantiation.
    spares: Mutex<Spares>,
    /// Set when a newer generation replaced this pool's: it keeps serving
    /// the connections it has, and makes or keeps no more instances.
    retired: AtomicBool,
}

#[derive(Default)]
struct Spares {
    ready: Vec<Instance>,
    /// Being instantiated now; counted so that concurrent refills never
    /// make more than `SPARE_INSTANCES`, which the pool is sized for.
    making: u32,
}

impl Pool {
    pub fn new(pre: ServerPre<GuestState>, policy: Arc<Policy>) -> Self {
        Pool {
            pre,
            policy,
            idle: Mutex::new(Vec::new()),
            spares: Mutex::new(Spares::default()),
            retired: AtomicBool::new(false),
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The compiled guest its instances are made of.
    pub fn component(&self) -> &wasmtime::component::Component {
        self.pre.instance_pre().component()
    }

    /// Drops the spare and idle instances, freeing their pool slots, and
    /// stops making or keeping more.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap());
        let spares = std::mem::take(&mut self.spares.lock().unwrap().ready);
        drop((idle, spares));
    }

    /// An instance ready to serve: one kept for reuse (if reuse is on), else
    /// a fresh spare; `None` if the caller must instantiate.
    pub fn take_ready(&self) -> Option<Instance> {
        if self.policy.limits.connections_per_instance > 1 {
            if let Some(instance) = self.idle.lock().unwrap().pop() {
                return Some(instance);
            }
        }
        self.spares.lock().unwrap().ready.pop()
    }

    /// A store for an instance made on the connection's own path.
    pub fn new_store(&self) -> Store<GuestState> {
        new_store(self.pre.engine(), &self.policy, Stdout::Log)
    }

    /// Instantiates the guest in `store`.
    pub async fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Server> {
        // Boxed: instantiation's future is large and short-lived; inline,
        // it would size every connection's task for the whole connection.
        let started = std::time::Instant::now();
        let made = Box::pin(self.pre.instantiate_async(store)).await;
        self.policy.metrics.instantiated(started.elapsed());
        made
    }

    /// Keeps an instance for the next connection if reuse is on, it has
    /// connections left, it kept no connection resource and there is room;
    /// otherwise drops it (freeing its pool slot).
    pub fn put_back(&self, instance: Instance) {
        let limits = &self.policy.limits;
        if instance.served >= limits.connections_per_instance
            || !instance.store.data().connections.all_closed()
            || self.retired.load(Ordering::Relaxed)
        {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < limits.max_idle_instances() as usize {
            idle.push(instance);
        }
    }

    /// Instantiates fresh spares up to `SPARE_INSTANCES`. Called once a
    /// connection is over and its permit released, off any client's path.
    pub async fn refill(&self) {
        loop {
            if self.retired.load(Ordering::Relaxed) {
                return;
            }
            {
                let mut spares = self.spares.lock().unwrap();
                if spares.ready.len() as u32 + spares.making >= SPARE_INSTANCES {
                    return;
                }
                spares.making += 1;
            }
            let mut store = self.new_store();
            let made = self.instantiate(&mut store).await;
            let mut spares = self.spares.lock().unwrap();
            spares.making -= 1;
            match made {
                // A pool retired meanwhile drops what it just made.
                Ok(_) if self.retired.load(Ordering::Relaxed) => return,
                Ok(guest) => spares.ready.push(Instance { store, guest, served: 0 }),
                Err(e) => {
                    // Instantiation will be retried, and reported, inline.
                    tracing::debug!("could not make a spare instance: {e}");
                    return;
                }
            }
        }
    }
}
