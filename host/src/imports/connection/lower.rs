//! The one place the host uses `wasmtime::component::__internal`, the
//! doc-hidden part of wasmtime's API with no stability promise. Checked
//! against wasmtime 48.0.8 (pinned with `=` in host/Cargo.toml): on an
//! upgrade, re-read `LowerContext` (runtime/component/func/options.rs) and
//! the `Lower` impl of `[u8]` (func/typed.rs) and compare with this file.
//!
//! What it is for: `recv`'s result, a `list<u8>`, is lowered by reading the
//! bytes that follow its head from the socket straight into the list's
//! allocation in guest memory, so bulk data is copied once (kernel to guest)
//! instead of twice (kernel to host buffer to guest). No `unsafe` block is
//! needed: the socket is reached through its own `Arc` so that guest memory
//! can be borrowed mutably from the lowering context at the same time.

use super::io::{read_noting_drain, Received};
use super::{code_for, Connection};
use crate::imports::state::GuestState;
use std::io;
use std::mem::MaybeUninit;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext};
use wasmtime::component::{ComponentType, Lower, Resource};
use wasmtime::ValRaw;

/// The `list<u8>` a `recv` returns.
///
/// Lowering allocates head plus `more` bytes in the guest, copies the head,
/// reads into the rest without waiting, and shrinks the allocation to what
/// arrived (the head is never empty, so the final size is never zero, as the
/// guest's `realloc` requires). Whatever is not queued yet is left for the
/// next `recv`; a read error breaks the connection as any failed read does,
/// and the head is still delivered.
pub struct RecvIntoGuest {
    received: Received,
    /// The connection's resource handle, to find its socket while lowering.
    rep: u32,
}

impl RecvIntoGuest {
    pub fn new(received: Received, rep: u32) -> Self {
        RecvIntoGuest { received, rep }
    }

    fn state<'a, T: 'static>(cx: &'a mut LowerContext<'_, T>) -> wasmtime::Result<&'a mut GuestState> {
        let state: &mut dyn std::any::Any = cx.store.data_mut();
        match state.downcast_mut::<GuestState>() {
            Some(state) => Ok(state),
            None => wasmtime::bail!("recv lowered into a store that is not a guest's"),
        }
    }

    /// Writes the list into guest memory, returning its address and length.
    fn lower_list<T: 'static>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let head = &self.received.head;
        let more = self.received.more;
        let capacity = head.len() + more;
        let ptr = cx.realloc(0, 0, 1, capacity)?;
        let conn = Resource::<Connection>::new_borrow(self.rep);
        let (stream, started) = if more > 0 {
            let state = Self::state(cx)?;
            // The kernel's copy into guest memory is I/O, not guest
            // computing: like every other read, it is not charged.
            (Some(state.table.get(&conn)?.stream.clone()), Some(state.clock.begin_wait()))
        } else {
            (None, None)
        };
        let Some(dst) = cx.as_slice_mut().get_mut(ptr..ptr + capacity) else {
            wasmtime::bail!("guest realloc returned an out-of-bounds buffer");
        };
        dst[..head.len()].copy_from_slice(head);
        let (Some(stream), Some(started)) = (stream, started) else {
            return Ok((ptr, capacity));
        };
        let rest = &mut dst[head.len()..];
        let read = read_noting_drain(&stream, more, || stream.try_read(rest));
        let state = Self::state(cx)?;
        state.clock.end_wait(started);
        let c = state.table.get_mut(&conn)?;
        let got = match read {
            Ok(n) => n,
            // Nothing more queued: the list holds the head alone.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                c.broken = Some(code_for(&e));
                0
            }
        };
        c.bytes_in += got as u64;
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
