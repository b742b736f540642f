//! The rules one simulated eswitch holds, by handle: a slab (handle = slot + 1, freed
//! slots reused) rather than a hash map. At a million rules a map's table is twice
//! the rules' size just past a doubling (issue 15's memory per flow; on a real host the
//! kernel holds the filters, in the bench the daemon does); a slab's unused room is
//! address space the kernel has not backed yet.

/// A slab of `T` by handle (never 0).
#[derive(Debug)]
pub(super) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Values held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Holds `v`; returns its handle, `None` past `u32::MAX - 1` values.
    pub(super) fn insert(&mut self, v: T) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|s| *s < u32::MAX)?;
                self.slots.push(None);
                s
            }
        };
        self.slots[slot as usize] = Some(v);
        self.len += 1;
        Some(slot + 1)
    }

    fn slot(handle: u32) -> Option<usize> {
        handle.checked_sub(1).map(|s| s as usize)
    }

    pub(super) fn get(&self, handle: u32) -> Option<&T> {
        self.slots.get(Self::slot(handle)?)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, handle: u32) -> Option<&mut T> {
        self.slots.get_mut(Self::slot(handle)?)?.as_mut()
    }

    pub(super) fn contains(&self, handle: u32) -> bool {
        self.get(handle).is_some()
    }

    pub(super) fn remove(&mut self, handle: u32) -> Option<T> {
        let s = Self::slot(handle)?;
        let v = self.slots.get_mut(s)?.take()?;
        self.len -= 1;
        self.free.push(handle - 1);
        Some(v)
    }

    /// Every value with its handle, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .zip(1u32..)
            .filter_map(|(v, h)| v.as_ref().map(|v| (h, v)))
    }

    /// Every value with its handle, in slot order.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.slots
            .iter_mut()
            .zip(1u32..)
            .filter_map(|(v, h)| v.as_mut().map(|v| (h, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_among_held_values_and_freed_slots_are_reused() {
        let mut s = Slab::default();
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        let c = s.insert("c").unwrap();
        assert_ne!(a, 0, "0 is never a handle");
        assert_eq!((s.len(), s.get(b)), (3, Some(&"b")));
        assert_eq!(s.remove(b), Some("b"));
        assert_eq!(s.remove(b), None);
        assert_eq!((s.get(b), s.contains(b)), (None, false));
        assert_eq!(s.remove(0), None);
        assert_eq!((s.get(0), s.get(99)), (None, None));
        // The freed slot is taken again: no growth for churn.
        let d = s.insert("d").unwrap();
        assert_eq!(d, b);
        assert_eq!(s.slots.len(), 3);
        *s.get_mut(a).unwrap() = "A";
        let all: Vec<_> = s.iter().collect();
        assert_eq!(all, vec![(a, &"A"), (d, &"d"), (c, &"c")]);
        assert_eq!(s.iter_mut().count(), 3);
        assert_eq!(s.len(), 3);
    }
}
