//! Why a guest ended without returning, in words for the log: a trap (with
//! the limit that caused it, when one did), or a stop the host imposed on a
//! guest that was blocked (CPU budget spent in a WASI call, lifetime).

use crate::imports::state::GuestState;
use crate::ops::metrics::Outcome;
use std::future::Future;
use std::time::Duration;
use wasmtime::Trap;

/// Why a guest call did not return.
pub enum Fault {
    /// The call failed: a trap, or an error from a host function.
    Trap(wasmtime::Error),
    /// The host stopped it (see `Stop`).
    Stopped(Stop),
}

/// Why the host stops a guest call that neither returned nor trapped.
#[derive(Debug)]
pub enum Stop {
    /// Its CPU budget ran out while it was blocked in a WASI call (a sleep),
    /// where epochs cannot interrupt it.
    BlockedPastCpu(Duration),
    /// The connection reached `--max-lifetime`.
    Lifetime(Duration),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::BlockedPastCpu(budget) => {
                write!(f, "CPU time limit reached (--cpu-timeout {budget:?}) while blocked in a WASI call")
            }
            Stop::Lifetime(lifetime) => write!(f, "connection lifetime reached (--max-lifetime {lifetime:?})"),
        }
    }
}

/// Resolves when the guest must be stopped whatever it is doing; raced
/// against the guest call, whose dropping drops the instance. Epochs
/// interrupt a guest that computes; this covers one blocked in WASI, and
/// the lifetime bounds everything.
pub fn stop_signal(state: &GuestState) -> impl Future<Output = Stop> + Send + 'static {
    let limits = &state.policy.limits;
    let (budget, lifetime) = (limits.cpu_timeout, limits.max_lifetime);
    let watch = state.clock.watch(budget);
    async move {
        let lifetime_ends = async {
            match lifetime {
                Some(lifetime) => tokio::time::sleep(lifetime).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = watch => Stop::BlockedPastCpu(budget),
            () = lifetime_ends => Stop::Lifetime(lifetime.unwrap_or_default()),
        }
    }
}

impl Fault {
    /// Names why the guest ended: the limit it hit, or the kind of trap.
    pub fn describe(&self, state: &GuestState) -> String {
        let err = match self {
            Fault::Stopped(stop) => return stop.to_string(),
            Fault::Trap(err) => err,
        };
        let limits = &state.policy.limits;
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) if state.clock.exhausted() => {
                format!("interrupted: CPU time limit reached (--cpu-timeout {:?})", limits.cpu_timeout)
            }
            Some(Trap::StackOverflow) => "trap: stack overflow (the guest recursed too deeply)".to_string(),
            Some(Trap::UnreachableCodeReached) if state.memory.denied() => format!(
                "trap: memory limit reached (--max-memory {} bytes); the guest aborted when it could not grow",
                limits.max_memory
            ),
            Some(Trap::UnreachableCodeReached) => "trap: the guest aborted (a panic or `unreachable`)".to_string(),
            Some(Trap::MemoryOutOfBounds) => "trap: out-of-bounds memory access".to_string(),
            Some(trap) => format!("trap: {trap}"),
            None => format!("host error: {err:#}"),
        }
    }

    /// How the connection ended, for its record and the metrics: the limit
    /// that stopped the guest, or a trap and its kind (an index into
    /// `metrics::TRAP_KINDS`).
    pub fn outcome(&self, state: &GuestState) -> (Outcome, Option<usize>) {
        let err = match self {
            Fault::Stopped(Stop::BlockedPastCpu(_)) => return (Outcome::CpuLimit, None),
            Fault::Stopped(Stop::Lifetime(_)) => return (Outcome::Lifetime, None),
            Fault::Trap(err) => err,
        };
        let kind = match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) if state.clock.exhausted() => return (Outcome::CpuLimit, None),
            Some(Trap::UnreachableCodeReached) if state.memory.denied() => return (Outcome::MemoryLimit, None),
            Some(Trap::UnreachableCodeReached) => 0,
            Some(Trap::StackOverflow) => 1,
            Some(Trap::MemoryOutOfBounds) => 2,
            Some(_) => 3,
            None => 4,
        };
        (Outcome::Trap, Some(kind))
    }

    /// With `--verbose`: the full error with the guest's wasm backtrace, as
    /// one event (its lines in one field) in the connection's span.
    pub fn log_backtrace(&self, span: &tracing::Span) {
        if let Fault::Trap(err) = self {
            tracing::error!(parent: span, backtrace = %format!("{err:?}"), "guest backtrace");
        }
    }
}
