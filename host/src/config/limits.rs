//! Per-connection limits: what one guest instance may use, and the memory
//! guard that enforces the linear-memory cap inside a store.

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

impl Limits {
    /// Idle instances kept for reuse; each holds a pool slot.
    pub fn max_idle_instances(&self) -> u32 {
        if self.connections_per_instance > 1 {
            self.max_connections.min(256)
        } else {
            0
        }
    }
}

/// Enforces the linear-memory cap and remembers that it did, so a trap that
/// follows (a Rust guest aborts when allocation fails) can be reported as
/// the memory limit rather than as a bare `unreachable`.
pub struct MemoryGuard {
    pub max: usize,
    pub denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryGuard {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k entries is far beyond what a
        // protocol guest needs and keeps a table bomb small.
        Ok(desired <= 100_000)
    }
}
