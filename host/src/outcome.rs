//! Why a guest run failed, in words for the log.

use crate::state::GuestState;
use wasmtime::Trap;

/// Names why a guest call failed: the limit it hit, or the kind of trap.
pub fn describe_fault(err: &wasmtime::Error, state: &GuestState) -> String {
    let limits = &state.policy.limits;
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) if state.cpu_exhausted => format!(
            "interrupted: CPU time limit reached (--cpu-timeout {:?})",
            limits.cpu_timeout
        ),
        Some(Trap::StackOverflow) => "trap: stack overflow (the guest recursed too deeply)".to_string(),
        Some(Trap::UnreachableCodeReached) if state.memory.denied => format!(
            "trap: memory limit reached (--max-memory {} bytes); the guest aborted when it could not grow",
            limits.max_memory
        ),
        Some(Trap::UnreachableCodeReached) => {
            "trap: the guest aborted (a panic or `unreachable`)".to_string()
        }
        Some(Trap::MemoryOutOfBounds) => "trap: out-of-bounds memory access".to_string(),
        Some(trap) => format!("trap: {trap}"),
        None => format!("host error: {err:#}"),
    }
}

/// The full error with the guest's wasm backtrace, for `--verbose`.
pub fn print_backtrace(source: &str, err: &wasmtime::Error) {
    eprintln!("[{source}] backtrace:\n{err:?}");
}
