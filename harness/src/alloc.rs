//! The allocator the binary and the benchmarks run with: mimalloc for small
//! blocks, the system's for large ones.
//!
//! A training step makes and drops dozens of small tensors; glibc's
//! malloc/free took a quarter of a small model's step, mimalloc a fraction of
//! that (perf, issue 15). But mimalloc keeps freed large blocks committed for
//! a while, so a wide model's few megabyte-sized gradients and their
//! temporaries stay resident side by side: the wide MLP seeds peaked at
//! 55 MiB under mimalloc, 43 MiB under glibc. Blocks of [`LARGE`] bytes and
//! more go to the system allocator, which reuses or returns them at once.
//! A block is always freed by the allocator that made it: Rust passes the
//! same layout to `dealloc` as to `alloc`, and the size picks the allocator.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks at least this large go to the system allocator.
pub const LARGE: usize = 1 << 20;

/// mimalloc below [`LARGE`] bytes, the system allocator from there on.
pub struct Allocator;

fn large(layout: &Layout) -> bool {
    layout.size() >= LARGE
}

// SAFETY: every call is forwarded to one of two sound allocators, chosen by the block's size,
// which is the same at allocation and deallocation; `realloc` across the threshold moves the
// block between them by allocate, copy, free.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(&layout) {
            System.alloc(layout)
        } else {
            MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(&layout) {
            System.alloc_zeroed(layout)
        } else {
            MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(&layout) {
            System.dealloc(ptr, layout)
        } else {
            MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (large(&layout), large(&new)) {
            (true, true) => System.realloc(ptr, layout, new_size),
            (false, false) => MiMalloc.realloc(ptr, layout, new_size),
            _ => {
                let moved = self.alloc(new);
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_move_between_the_allocators_intact() {
        // Grow a block across the threshold and shrink it back, checking its bytes each way.
        unsafe {
            let small = Layout::from_size_align(1000, 8).unwrap();
            let p = Allocator.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let p = Allocator.realloc(p, small, 2 * LARGE);
            assert!((0..1000).all(|i| *p.add(i) == (i % 251) as u8));
            let big = Layout::from_size_align(2 * LARGE, 8).unwrap();
            let p = Allocator.realloc(p, big, 500);
            assert!((0..500).all(|i| *p.add(i) == (i % 251) as u8));
            Allocator.dealloc(p, Layout::from_size_align(500, 8).unwrap());
            let z = Allocator.alloc_zeroed(big);
            assert!((0..2 * LARGE).step_by(4093).all(|i| *z.add(i) == 0));
            Allocator.dealloc(z, big);
        }
    }
}
