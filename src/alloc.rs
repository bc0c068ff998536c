//! The global allocator: mimalloc, entered by its plain `mi_malloc` when the alignment asked
//! for is one every mimalloc block has.
//!
//! The `mimalloc` crate's `GlobalAlloc` calls `mi_malloc_aligned` for every allocation, whose
//! checks (a power of two, the block's address against the alignment) cost on each of a
//! request's ~60 allocations. Every mimalloc block is aligned to at least a machine word
//! (`MI_INTPTR_SIZE`: its size classes are multiples of it and its pages are aligned), so a
//! layout aligned to at most that takes `mi_malloc`, `mi_zalloc` and `mi_realloc`; a larger
//! alignment still goes through the aligned entries. Frees are `mi_free` either way.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

pub struct Mimalloc;

// SAFETY: each entry hands the layout's size (and, above a word, its alignment) to mimalloc's
// matching entry, whose blocks are at least word-aligned; frees go to `mi_free`, which takes
// any mimalloc block.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Blocks of every small size and alignment come back aligned and usable (the global
    /// allocator of this test binary is the one above).
    #[test]
    fn blocks_are_aligned_for_every_layout() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..300).chain([4095, 4096, 70_000]) {
                let layout = std::alloc::Layout::from_size_align(size, align).unwrap();
                let v: Vec<*mut u8> = (0..8)
                    .map(|_| {
                        // SAFETY: a non-zero size; freed below with the same layout.
                        #[allow(unsafe_code)]
                        let p = unsafe { std::alloc::alloc(layout) };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p
                    })
                    .collect();
                for p in v {
                    // SAFETY: allocated above with `layout`.
                    #[allow(unsafe_code)]
                    unsafe {
                        std::alloc::dealloc(p, layout)
                    };
                }
            }
        }
        let mut s = String::new();
        for i in 0..10_000 {
            s.push_str(&i.to_string());
        }
        assert!(s.len() > 30_000);
    }
}
