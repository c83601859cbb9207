//! Returning freed heap memory to the system. The allocator keeps pages a
//! thread freed for that thread's next allocations, and gives them back
//! only when the thread allocates or frees again; an async worker idle
//! after a burst does neither. When the instance pool is renewed after a
//! burst (runtime/trim.rs), `request` asks every worker to release what its
//! heap holds unused: each does so the next time it parks (goes idle),
//! through the function the binary registered (`set_release`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();
static REQUESTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RELEASED: Cell<u64> = const { Cell::new(0) };
}

/// How the process's allocator releases a thread's unused pages (the
/// binary knows its allocator; the library does not).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Asks every async worker (and the caller's thread, now) to release its
/// heap's unused pages.
pub fn request() {
    REQUESTED.fetch_add(1, Ordering::Relaxed);
    on_park();
}

/// Called by each async worker when it parks: releases once per request.
pub fn on_park() {
    let requested = REQUESTED.load(Ordering::Relaxed);
    if RELEASED.get() != requested {
        RELEASED.set(requested);
        if let Some(release) = RELEASE.get() {
            release();
        }
    }
}
