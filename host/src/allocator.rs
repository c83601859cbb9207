//! The binary's global allocator: mimalloc, asked the way C's `malloc` is
//! wherever `malloc`'s alignment covers the request.
//!
//! Every connection instantiates its guest anew, which makes many small,
//! short-lived allocations across threads; mimalloc serves them with less
//! CPU than glibc's malloc (measured about 8% per exchange at 256
//! concurrent), for about 1 KiB more per idle connection.
//!
//! The `mimalloc` crate's allocator passes every request to
//! `mi_malloc_aligned`, even Rust's usual alignment of 8 or less. That one
//! takes its fast path only for a block of at most 1 KiB that happens to
//! be aligned; otherwise (wasmtime's stores and instances, tokio's tasks,
//! a log line's buffer) it over-allocates, about 220 instructions.
//! Every mimalloc block is aligned to 8, so `mi_malloc` serves
//! those directly: of a seed exchange's 67 allocations, 60 are, and the 67
//! take 3,900 instructions instead of 6,300.

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment of every block `mi_malloc` returns (a word).
const MALLOC_ALIGN: usize = 8;

pub struct MiMalloc;

// SAFETY: mimalloc returns blocks of at least the requested size, aligned
// to the requested alignment (`_aligned`) or to MALLOC_ALIGN (the others,
// used only when that covers the layout), or null; it frees what it made.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match layout.align() <= MALLOC_ALIGN {
            true => mi_malloc(layout.size()) as *mut u8,
            false => mi_malloc_aligned(layout.size(), layout.align()) as *mut u8,
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match layout.align() <= MALLOC_ALIGN {
            true => mi_zalloc(layout.size()) as *mut u8,
            false => mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8,
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match layout.align() <= MALLOC_ALIGN {
            true => mi_realloc(ptr as *mut c_void, new_size) as *mut u8,
            false => mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8,
        }
    }
}
