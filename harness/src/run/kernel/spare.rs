//! Spare buffers kept from one training step to the next, per thread: the fused
//! recurrence's states and gates (`recurrent.rs`), megabytes a layer, which it
//! takes in its forward and gives back when its op is dropped after the backward,
//! its backward's gate gradients and fed states (taken and given back within the
//! backward), a convolution's columns (`conv.rs`: the batch's, taken in its forward and given
//! back after its backward or when its op is dropped, and per-sample products), and a
//! product made column-major before it is moved (`linear.rs`), these taken and given back
//! within their pass (zeroing them was a pass over memory per call for nothing).
//!
//! Blocks of a megabyte and more go to the system allocator (`nanhunt::alloc`),
//! which maps fresh zeroed pages for each and unmaps them on free: page faults
//! on first touch took some 15% of an LSTM's step (perf). A spare is reused
//! whole, its old values overwritten before they are read, so no value depends
//! on it. At most [`KEEP`] spares stay per thread, no more than the layers of one
//! step hold anyway between their forward and backward.

use std::any::Any;
use std::cell::RefCell;

/// The most spares one thread keeps.
const KEEP: usize = 8;

thread_local! {
    /// This thread's spares, each a `Vec<T>` of some float type, the latest given last.
    static SPARES: RefCell<Vec<Box<dyn Any + Send>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` values of `T`: a spare of that length if there is one (its old values
/// left in it, for the caller to overwrite), else a new one of zeros.
pub(crate) fn take<T: Copy + Default + Send + 'static>(len: usize) -> Vec<T> {
    let found = SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let at = s.iter().rposition(|b| b.downcast_ref::<Vec<T>>().is_some_and(|v| v.len() == len))?;
        s.remove(at).downcast::<Vec<T>>().ok()
    });
    found.map_or_else(|| vec![T::default(); len], |b| *b)
}

/// Gives `v` back for a later [`take`] on this thread (the oldest spare is dropped beyond [`KEEP`]).
pub(crate) fn give<T: Send + 'static>(v: Vec<T>) {
    if v.is_empty() {
        return;
    }
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() == KEEP {
            s.remove(0);
        }
        s.push(Box::new(v));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_by_length_and_type() {
        let v = take::<f32>(1000);
        assert_eq!(v, vec![0.0; 1000], "a new buffer is zeros");
        let at = v.as_ptr();
        give(v);
        let (other, short) = (take::<f64>(1000), take::<f32>(999));
        assert_ne!(other.as_ptr() as usize, at as usize, "another type is not the spare");
        assert_ne!(short.as_ptr(), at, "another length is not the spare");
        let again = take::<f32>(1000);
        assert_eq!(again.as_ptr(), at, "the spare is reused");
        let fresh = take::<f32>(1000);
        assert_ne!(fresh.as_ptr(), at, "and taken once");
    }
}
