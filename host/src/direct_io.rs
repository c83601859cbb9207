//! `connection.send` and `connection.recv` linked by hand, so that bulk bytes
//! move between the socket and guest memory without a copy through a host
//! buffer. The generated bindings would copy a sent list into a host `Vec`,
//! and copy every received `Vec` into guest memory; for bulk transfers those
//! copies are a measurable part of the host's cost.

use crate::bindings::ErrorCode;
use crate::connection::{code_for, read_noting_drain, Connection, Received};
use crate::state::GuestState;
use std::io;
use std::mem::MaybeUninit;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext};
use wasmtime::component::{ComponentType, Linker, Lower, Resource, WasmList};
use wasmtime::{StoreContextMut, ValRaw};

/// The instance name of the `types` interface in the component model.
const TYPES_INSTANCE: &str = "netplug:protocol/types@0.1.0";

/// Shadows the generated `send` and `recv` bindings with the direct ones.
pub fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES_INSTANCE)?;
    types.func_wrap_async(
        "[method]connection.send",
        |mut store: StoreContextMut<'_, GuestState>, (conn, data): (Resource<Connection>, WasmList<u8>)| {
            Box::new(async move { send_from_guest(&mut store, conn, data).await.map(|r| (r,)) })
        },
    )?;
    types.func_wrap_async(
        "[method]connection.recv",
        |mut store: StoreContextMut<'_, GuestState>, (conn, max): (Resource<Connection>, u32)| {
            Box::new(async move {
                let rep = conn.rep();
                let received = store.data_mut().recv_head(&conn, max).await?;
                Ok((received.map(|received| RecvIntoGuest { received, rep }),))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `connection.send` on bytes still in guest memory: the same checks, limits
/// and bookkeeping as the generated binding's `send`, without the copy.
async fn send_from_guest(
    store: &mut StoreContextMut<'_, GuestState>,
    conn: Resource<Connection>,
    data: WasmList<u8>,
) -> wasmtime::Result<Result<(), ErrorCode>> {
    let len = data.len();
    if let Some(code) = store.data().send_refusal(&conn, len)? {
        return Ok(Err(code));
    }
    let (budget, end) = store.data().wait_budget();
    let started = store.data().clock.begin_wait();
    let deadline = tokio::time::Instant::now() + budget;
    let mut sent = 0;
    let outcome = loop {
        if sent == len {
            break Ok(());
        }
        let written = {
            let c = store.data().table.get(&conn)?;
            c.stream.try_write(&data.as_le_slice(&*store)[sent..])
        };
        match written {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let c = store.data().table.get(&conn)?;
                match tokio::time::timeout_at(deadline, c.stream.writable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(code_for(&e)),
                    Err(_) => break Err(ErrorCode::TimedOut),
                }
            }
            Err(e) => break Err(code_for(&e)),
        }
    };
    let state = store.data_mut();
    state.table.get_mut(&conn)?.bytes_out += sent as u64;
    state.after_wait(&conn, outcome.err(), started, end, "send")?;
    Ok(outcome)
}

/// The `list<u8>` a `recv` returns, lowered by reading the bytes that follow
/// its head from the socket straight into the guest's allocation.
///
/// Lowering allocates head plus `more` bytes in the guest, copies the head,
/// reads into the rest without waiting, and shrinks the allocation to what
/// arrived (the head is never empty, so the final size is never zero, as the
/// guest's `realloc` requires). Whatever is not queued yet is left for the
/// next `recv`; a read error here leaves it for the next `recv` to report.
pub struct RecvIntoGuest {
    received: Received,
    /// The connection's resource handle, to find its socket while lowering.
    rep: u32,
}

impl RecvIntoGuest {
    /// Writes the list into guest memory, returning its address and length.
    fn lower_list<T: 'static>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let head = &self.received.head;
        let more = self.received.more;
        let capacity = head.len() + more;
        let ptr = cx.realloc(0, 0, 1, capacity)?;
        let Some(dst) = cx.as_slice_mut().get_mut(ptr..ptr + capacity) else {
            wasmtime::bail!("guest realloc returned an out-of-bounds buffer");
        };
        dst[..head.len()].copy_from_slice(head);
        if more == 0 {
            return Ok((ptr, capacity));
        }
        let rest = dst[head.len()..].as_mut_ptr();
        let state = cx.store.data_mut();
        let Some(state) = (state as &mut dyn std::any::Any).downcast_mut::<GuestState>() else {
            wasmtime::bail!("recv lowered into a store that is not a guest's");
        };
        let conn = state.table.get_mut(&Resource::<Connection>::new_borrow(self.rep))?;
        // SAFETY: `rest` points into the guest's linear memory, which no
        // wasm code or host call can touch or move until lowering is done;
        // the connection borrowed here is host memory, not guest memory.
        let rest = unsafe { std::slice::from_raw_parts_mut(rest, more) };
        let stream = &conn.stream;
        // The kernel's copy into guest memory is I/O, not guest computing:
        // like every other read, it is not charged to the CPU budget.
        let started = state.clock.begin_wait();
        let got = match read_noting_drain(stream, more, || stream.try_read(rest)) {
            Ok(n) => n,
            // Nothing more queued: the list holds the head alone.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The head is still delivered; the failure is what every later
            // call on the connection returns, as after any failed read.
            Err(e) => {
                conn.broken = Some(code_for(&e));
                0
            }
        };
        state.clock.end_wait(started);
        conn.bytes_in += got as u64;
        let len = head.len() + got;
        if len == capacity {
            return Ok((ptr, len));
        }
        Ok((cx.realloc(ptr, capacity, 1, len)?, len))
    }
}

// SAFETY: the canonical ABI of a `list<u8>`: a pointer and a length, checked
// against the WIT type by `typecheck`, exactly as wasmtime's own `[u8]`.
unsafe impl ComponentType for RecvIntoGuest {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes a pointer/length pair to a list allocated with the guest's
// own `realloc` and filled within its bounds, as wasmtime's `[u8]` does.
unsafe impl Lower for RecvIntoGuest {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<[ValRaw; 2]>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.lower_list(cx)?;
        // Pointers are written as 64-bit values, as wasmtime's own lists do.
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.lower_list(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}
