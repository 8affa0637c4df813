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
//!
//! glibc's defaults gave each freed large block back to the kernel (the heap's
//! top trimmed by `brk`, or the block unmapped), so the next step's block of
//! the same size faulted in fresh zeroed pages: page faults and `brk` were a
//! third of a small CNN's step (perf, issue 31; 0.30 s of system time in a
//! 96-step run, 0.01 s after). [`tune`] keeps freed heap memory for reuse
//! (trim threshold [`KEEP`]) and takes blocks up to [`MMAP`] from the heap,
//! before the first large block. Peak memory does not grow: what is kept was
//! resident at the peak anyway (the wide MLP seeds: 42.3–42.5 MiB, 42.5–42.9 after).

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks at least this large go to the system allocator.
pub const LARGE: usize = 1 << 20;

/// Freed memory glibc keeps at the heap's top before trimming it (its default is 128 KiB).
pub const KEEP: usize = 256 << 20;

/// Blocks from this size on are mapped on their own (glibc's default starts at 128 KiB and
/// rises to the largest block freed, up to 32 MiB).
pub const MMAP: usize = 32 << 20;

/// mimalloc below [`LARGE`] bytes, the system allocator from there on.
pub struct Allocator;

/// Whether the system allocator takes `layout` (tuned by [`tune`] before its first block).
fn large(layout: &Layout) -> bool {
    let large = layout.size() >= LARGE;
    if large {
        TUNED.call_once(|| {
            tune();
        });
    }
    large
}

static TUNED: std::sync::Once = std::sync::Once::new();

/// Sets glibc's trim threshold to [`KEEP`] and its map threshold to [`MMAP`] (see the module's
/// doc); whether both took. Without glibc there is nothing to set.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters; both values are within glibc's bounds.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP as libc::c_int) == 1 && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP as libc::c_int) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    true
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
    fn glibc_takes_the_thresholds() {
        assert!(tune(), "mallopt refused the trim or map threshold");
    }

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
