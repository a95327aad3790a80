//! The module's allocator: mimalloc (`libmimalloc-sys`), for the Rust code of this library
//! only (Envoy allocates with its own tcmalloc; nothing allocated on one side is freed on
//! the other: Envoy copies what we hand it, and we never free its buffers). With glibc's
//! `malloc` and `free`, the default for a Rust library, a held request's 11 allocations cost
//! Envoy ~2.4k instructions of the module's ~27k; with mimalloc (v2, the workspace's
//! features) ~0.9k (`scripts/envoy_instructions.py`, callgrind's inclusive costs).
//!
//! A block whose alignment `mi_malloc` already gives (16 bytes, or the size itself for
//! smaller ones, as for C's `malloc`) is asked of its fast path; only a larger alignment
//! goes to `mi_malloc_aligned`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment every `mi_malloc` block of at least this size has (`MI_MAX_ALIGN_SIZE` on
/// 64-bit targets).
const MALLOC_ALIGN: usize = 16;

struct MiMalloc;

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Whether `mi_malloc` of `size` bytes is aligned enough for `layout`.
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: each method returns null or a block of at least the layout's size with at least
// its alignment (mimalloc's contract: `mi_malloc` blocks are aligned as C's `malloc`'s, to
// `MALLOC_ALIGN` or to the largest power of two dividing a smaller size, and the `_aligned`
// variants to the alignment asked); blocks are freed and resized only by mimalloc, which
// takes any block it made, aligned or not.
unsafe impl GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            // SAFETY: any size is valid (0 gives a unique pointer).
            unsafe { mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: `Layout` guarantees a power-of-two alignment.
            unsafe { mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            // SAFETY: as in `alloc`.
            unsafe { mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: by GlobalAlloc's contract, a live block this allocator returned.
        unsafe { mi_free(ptr as *mut c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            // SAFETY: a live block of ours (GlobalAlloc's contract); the new block keeps
            // the contents up to the smaller size, at an alignment `mi_malloc` gives.
            unsafe { mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as above, at `layout`'s alignment.
            unsafe { mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8 }
        }
    }
}
