//! A vector whose copies share their unchanged parts.
//!
//! A derived snapshot starts as a copy of its parent's slot table and VIP
//! index and changes a few entries. Copied whole, both are new memory in
//! every publish — written on the control plane's core — and the first
//! burst a worker runs on the new snapshot misses the cache on every
//! packet's lookups: `pipeline_during_publishes` measured that burst at
//! twice the median one with 1 000 services. Held as fixed chunks behind
//! `Arc`s, a copy shares every chunk and a write copies only its own
//! (copy on write), so the worker's cached lines stay valid for all the
//! chunks a publish did not touch. A read costs one more dependent load,
//! of a pointer in a small array that stays in L1.

use std::sync::Arc;

/// Entries per chunk: a power of two, so that an index splits with a shift
/// and a mask.
pub(super) const CHUNK: usize = 64;

/// A growable vector of `T` in chunks of [`CHUNK`] entries shared between
/// copies (see the module documentation). Positions past `len` up to the
/// end of the last chunk hold the fill value.
#[derive(Debug, Clone)]
pub(super) struct Chunked<T> {
    chunks: Vec<Arc<[T; CHUNK]>>,
    len: usize,
    fill: T,
}

impl<T: Clone> Chunked<T> {
    /// `len` entries of `fill`.
    pub(super) fn filled(len: usize, fill: T) -> Chunked<T> {
        let mut c = Chunked {
            chunks: Vec::new(),
            len: 0,
            fill,
        };
        c.grow_to(len);
        c
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The entry at `i`: `None` past the last chunk, the fill value between
    /// `len` and the end of the last chunk.
    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> Option<&T> {
        // `i % CHUNK` is below the array's length: no bounds check.
        self.chunks.get(i / CHUNK).map(|c| &c[i % CHUNK])
    }

    /// The entry at `i` for writing; its chunk is copied first when another
    /// vector shares it. `None` at or past `len`.
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let chunk = self.chunks.get_mut(i / CHUNK)?;
        Some(&mut Arc::make_mut(chunk)[i % CHUNK])
    }

    /// Makes the vector at least `len` long, the new entries the fill
    /// value.
    pub(super) fn grow_to(&mut self, len: usize) {
        while self.chunks.len() * CHUNK < len {
            let fill = self.fill.clone();
            self.chunks
                .push(Arc::new(std::array::from_fn(|_| fill.clone())));
        }
        self.len = self.len.max(len);
    }

    /// The first `len` entries in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    /// How many chunks `self` and `other` share (the same allocation).
    #[cfg(test)]
    pub(super) fn shared_chunks(&self, other: &Chunked<T>) -> usize {
        self.chunks
            .iter()
            .zip(&other.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_grows_like_a_vec() {
        let mut c = Chunked::filled(3, 0usize);
        let mut model = vec![0usize; 3];
        for len in [3, 64, 65, 200, 129] {
            c.grow_to(len);
            if model.len() < len {
                model.resize(len, 0);
            }
            for i in (0..model.len()).step_by(7) {
                *c.get_mut(i).unwrap() += i + 1;
                model[i] += i + 1;
            }
            assert_eq!(c.len(), model.len());
            assert!(c.iter().eq(model.iter()));
            for (i, v) in model.iter().enumerate() {
                assert_eq!(c.get(i), Some(v));
            }
            assert!(c.get_mut(model.len()).is_none());
        }
        // Between len and the end of the last chunk: the fill value.
        assert_eq!(c.get(200), Some(&0));
        assert_eq!(c.get(c.chunks.len() * CHUNK), None);
    }

    #[test]
    fn a_write_copies_only_its_chunk() {
        let parent = Chunked::filled(10 * CHUNK, 7u8);
        let mut child = parent.clone();
        assert_eq!(child.shared_chunks(&parent), 10);
        *child.get_mut(3 * CHUNK + 5).unwrap() = 1;
        *child.get_mut(3 * CHUNK + 6).unwrap() = 2;
        assert_eq!(child.shared_chunks(&parent), 9);
        assert_eq!(parent.get(3 * CHUNK + 5), Some(&7), "parent unchanged");
        assert_eq!(child.get(3 * CHUNK + 5), Some(&1));
        assert_eq!(child.get(3 * CHUNK + 6), Some(&2));
    }
}
