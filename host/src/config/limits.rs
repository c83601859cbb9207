//! Per-connection limits: what one guest instance may use, and the pool
//! slots a listener needs for them.

use std::time::Duration;

/// The most bytes one `recv` hands to a guest, whatever it asks for: the host
/// allocates the receive buffer, so a guest must not choose its size freely.
pub const MAX_RECV: u32 = 64 * 1024;

/// Limits applied to every guest instance, one instance per connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_memory: u64,
    pub cpu_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub max_bytes_in: Option<u64>,
    pub max_bytes_out: Option<u64>,
    pub max_resources: u32,
    pub max_log_lines: u32,
    pub max_log_bytes: u64,
    /// Connections one instance may serve in turn; 1 means a fresh instance
    /// for every connection.
    pub connections_per_instance: u32,
}

/// Fresh instances a listener keeps ready. Each serves exactly one
/// connection like any other fresh instance; it is only made before the
/// connection arrives.
pub const SPARE_INSTANCES: u32 = 2;

impl Limits {
    /// Instance slots a listener with these limits needs from the engine's
    /// pool: one per connection, per idle instance kept for reuse, per spare
    /// (twice: a replaced generation's refill may finish a spare just after
    /// the swap, and drops it at once), and one for a client run.
    pub fn slots_needed(&self) -> u32 {
        self.max_connections + self.max_idle_instances() + 2 * SPARE_INSTANCES + 1
    }

    /// Idle instances kept for reuse; each holds a pool slot.
    pub fn max_idle_instances(&self) -> u32 {
        if self.connections_per_instance > 1 {
            self.max_connections.min(256)
        } else {
            0
        }
    }
}

/// The most instance slots the pool may have: each reserves about 4 GiB of
/// address space, and x86_64 user space is 128 TiB.
pub const MAX_INSTANCES: u32 = 30_000;
