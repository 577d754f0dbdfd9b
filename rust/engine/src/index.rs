//! The order id index: engine order id → order slot, without hashing.
//!
//! Order ids are assigned 1, 2, 3, … so the index is a direct map split into pages of
//! [`PAGE`] ids. A page is allocated when the first of its ids is indexed and returned to a
//! free list when its last live id is removed, so memory follows the ids that are still open,
//! not every id ever issued, and steady-state trading reuses pages instead of allocating.
//! A run of empty pages at the old end of the window is dropped, so the window of pages
//! tracked spans from the oldest open order to the newest.
//!
//! Invariants: `pages[i]` describes page number `first_page + i`; a page's `live` count is
//! the number of non-NIL entries in it; a page with `live == 0` is on the free list and
//! referenced by no entry of `pages`.
//!
//! Complexity: get, insert and remove are O(1) (insert amortised over page turnover).

use std::collections::VecDeque;

use crate::book::{Slot, NIL};

const PAGE_BITS: u32 = 12;
/// Ids per page.
pub const PAGE: usize = 1 << PAGE_BITS;
const PAGE_MASK: u64 = PAGE as u64 - 1;

/// Engine order id → slot.
#[derive(Clone, Debug)]
pub struct OrderIdIndex {
    /// Page number of `pages[0]`.
    first_page: u64,
    /// For each page number from `first_page`: its storage page, or NIL.
    pages: VecDeque<u32>,
    /// Page storage, each `PAGE` entries long.
    store: Vec<Box<[Slot]>>,
    /// Live entries per storage page.
    live: Vec<u32>,
    /// Storage pages not in use.
    free: Vec<u32>,
    len: usize,
}

impl OrderIdIndex {
    /// An index with storage for about `capacity` open orders before it allocates.
    pub fn with_capacity(capacity: usize) -> Self {
        let pages = capacity.div_ceil(PAGE).max(1) + 1;
        let mut index = OrderIdIndex {
            first_page: 0,
            pages: VecDeque::with_capacity(pages * 4),
            store: Vec::with_capacity(pages),
            live: Vec::with_capacity(pages),
            free: Vec::with_capacity(pages),
            len: 0,
        };
        for _ in 0..pages {
            index.new_page();
            let p = index.store.len() as u32 - 1;
            index.free.push(p);
        }
        index
    }

    fn new_page(&mut self) -> u32 {
        self.store.push(vec![NIL; PAGE].into_boxed_slice());
        self.live.push(0);
        self.store.len() as u32 - 1
    }

    /// Number of ids indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn page_of(&self, id: u64) -> Option<u32> {
        let page = id >> PAGE_BITS;
        let i = page.checked_sub(self.first_page)?;
        let p = *self.pages.get(usize::try_from(i).ok()?)?;
        (p != NIL).then_some(p)
    }

    /// The slot of `id`, if indexed.
    #[inline]
    pub fn get(&self, id: u64) -> Option<Slot> {
        let p = self.page_of(id)?;
        let s = self.store[p as usize][(id & PAGE_MASK) as usize];
        (s != NIL).then_some(s)
    }

    /// Index `id` (not already indexed) at `slot`.
    pub fn insert(&mut self, id: u64, slot: Slot) {
        let page = id >> PAGE_BITS;
        if self.pages.is_empty() {
            self.first_page = page;
        }
        while page < self.first_page {
            self.pages.push_front(NIL);
            self.first_page -= 1;
        }
        let i = (page - self.first_page) as usize;
        while self.pages.len() <= i {
            self.pages.push_back(NIL);
        }
        let p = match self.pages[i] {
            NIL => {
                let p = match self.free.pop() {
                    Some(p) => p,
                    None => self.new_page(),
                };
                self.pages[i] = p;
                p
            }
            p => p,
        };
        let entry = &mut self.store[p as usize][(id & PAGE_MASK) as usize];
        debug_assert_eq!(*entry, NIL, "order id {id} indexed twice");
        *entry = slot;
        self.live[p as usize] += 1;
        self.len += 1;
    }

    /// Remove `id`, returning its slot if it was indexed.
    pub fn remove(&mut self, id: u64) -> Option<Slot> {
        let p = self.page_of(id)?;
        let entry = &mut self.store[p as usize][(id & PAGE_MASK) as usize];
        if *entry == NIL {
            return None;
        }
        let slot = std::mem::replace(entry, NIL);
        self.len -= 1;
        self.live[p as usize] -= 1;
        if self.live[p as usize] == 0 {
            let i = ((id >> PAGE_BITS) - self.first_page) as usize;
            self.pages[i] = NIL;
            self.free.push(p);
            while self.pages.front() == Some(&NIL) {
                self.pages.pop_front();
                self.first_page += 1;
            }
        }
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ids_across_pages_and_recycles_them() {
        let mut index = OrderIdIndex::with_capacity(10);
        let ids: Vec<u64> = (1..=3 * PAGE as u64 + 7).collect();
        for &id in &ids {
            index.insert(id, id as Slot * 2);
        }
        assert_eq!(index.len(), ids.len());
        for &id in &ids {
            assert_eq!(index.get(id), Some(id as Slot * 2));
        }
        assert_eq!(index.get(0), None);
        assert_eq!(index.get(10 * PAGE as u64), None);
        let stores = index.store.len();
        for &id in &ids[..2 * PAGE] {
            assert_eq!(index.remove(id), Some(id as Slot * 2));
            assert_eq!(index.remove(id), None);
            assert_eq!(index.get(id), None);
        }
        // Emptied pages were recycled: new ids reuse them.
        for id in 4 * PAGE as u64..6 * PAGE as u64 {
            index.insert(id, 1);
        }
        assert_eq!(index.store.len(), stores);
        assert_eq!(index.get(2 * PAGE as u64 + 5), Some((2 * PAGE as u64 + 5) as Slot * 2));
        assert_eq!(index.len(), ids.len() - 2 * PAGE + 2 * PAGE);
    }
}
