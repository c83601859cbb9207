//! The guest's allocator: free lists of small blocks in front of the
//! system's (wasi-libc's dlmalloc).
//!
//! A pipelined batch allocates and frees a few dozen small blocks: the
//! request's argument lists, and the host's `cabi_realloc` calls for each
//! key and value `get-many` returns. dlmalloc spends about a hundred
//! instructions on each `malloc` and each `free`; a free list of blocks of
//! one size class takes a few. A freed small block goes back to its class's
//! list (up to [`CACHE_LIMIT`] bytes in all, past which it goes back to
//! dlmalloc), and the next allocation of that class takes it. Larger or
//! more aligned blocks go to dlmalloc as before.
//!
//! A component instance runs one connection on one thread (wasm32 without
//! threads), so the lists need no lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Size classes 8, 16, 32, ... up to `8 << (CLASSES - 1)` bytes.
const CLASSES: usize = 8;
const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = MIN_SIZE << (CLASSES - 1);
/// Every block of a class is allocated from the system with this alignment.
const ALIGN: usize = 8;
/// The most bytes the free lists hold: beyond, freed blocks go back to
/// dlmalloc, so what a connection frees stays usable for larger blocks.
const CACHE_LIMIT: usize = 64 << 10;

struct Lists {
    /// The first free block of each class; each free block holds the next.
    heads: [*mut u8; CLASSES],
    /// The bytes the lists hold.
    cached: usize,
}

pub struct Pool {
    lists: UnsafeCell<Lists>,
}

// Sound on wasm32 without the `atomics` feature: one thread only.
unsafe impl Sync for Pool {}

impl Pool {
    pub const fn new() -> Self {
        Pool { lists: UnsafeCell::new(Lists { heads: [ptr::null_mut(); CLASSES], cached: 0 }) }
    }
}

/// The class of a layout, or `None` when the system serves it.
#[inline]
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size > MAX_SIZE || layout.align() > ALIGN {
        return None;
    }
    // 0..=8 -> 0, 9..=16 -> 1, 17..=32 -> 2, ...
    let rounded = size.max(MIN_SIZE).next_power_of_two();
    Some((rounded.trailing_zeros() - MIN_SIZE.trailing_zeros()) as usize)
}

#[inline]
fn class_layout(class: usize) -> Layout {
    // SAFETY: a power of two no larger than MAX_SIZE, aligned to ALIGN.
    unsafe { Layout::from_size_align_unchecked(MIN_SIZE << class, ALIGN) }
}

unsafe impl GlobalAlloc for Pool {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else { return System.alloc(layout) };
        let lists = &mut *self.lists.get();
        let head = lists.heads[class];
        if head.is_null() {
            return System.alloc(class_layout(class));
        }
        lists.heads[class] = *(head as *mut *mut u8);
        lists.cached -= MIN_SIZE << class;
        head
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class(layout) else { return System.dealloc(block, layout) };
        let lists = &mut *self.lists.get();
        let size = MIN_SIZE << class;
        if lists.cached + size > CACHE_LIMIT {
            return System.dealloc(block, class_layout(class));
        }
        *(block as *mut *mut u8) = lists.heads[class];
        lists.heads[class] = block;
        lists.cached += size;
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class(layout), class(new_layout)) {
            // Both served by the system: its realloc may grow in place.
            (None, None) => System.realloc(block, layout, new_size),
            // The block already has room.
            (Some(old), Some(new)) if old == new => block,
            _ => {
                let new_block = self.alloc(new_layout);
                if !new_block.is_null() {
                    ptr::copy_nonoverlapping(block, new_block, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                new_block
            }
        }
    }
}
