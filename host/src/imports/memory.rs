//! The linear-memory cap (`--max-memory`), enforced inside a store.

/// Enforces the linear-memory cap and remembers that it did, so a trap that
/// follows (a Rust guest aborts when allocation fails) can be reported as
/// the memory limit rather than as a bare `unreachable`.
pub struct MemoryGuard {
    max: usize,
    denied: bool,
}

impl MemoryGuard {
    pub fn new(max: u64) -> Self {
        MemoryGuard { max: max as usize, denied: false }
    }

    /// Whether a growth past the cap was refused since the last `reset`.
    pub fn denied(&self) -> bool {
        self.denied
    }

    /// For an instance that serves another connection.
    pub fn reset(&mut self) {
        self.denied = false;
    }
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
