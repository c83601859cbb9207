//! The engine pool's instance slots, shared out among listeners. A
//! listener holds what its limits need from its start until its last
//! connection ends, so the pool never runs out under a listener that stays
//! within its limits: instantiation fails when the pool is full, and this
//! budget is what keeps it from being full.

use std::sync::{Arc, Mutex};

/// The pool's instance slots, shared out among listeners: a listener holds
/// what its limits need from its start until its last connection ends, so
/// the pool never runs out under a listener that stays within its limits.
pub(crate) struct SlotBudget {
    capacity: u32,
    reserved: Mutex<u32>,
}

impl SlotBudget {
    pub(crate) fn new(capacity: u32) -> Arc<SlotBudget> {
        Arc::new(SlotBudget { capacity, reserved: Mutex::new(0) })
    }

    pub(crate) fn reserve(self: &Arc<Self>, slots: u32) -> Option<Reservation> {
        let mut reserved = self.reserved.lock().unwrap();
        if *reserved + slots > self.capacity {
            return None;
        }
        *reserved += slots;
        Some(Reservation { budget: self.clone(), slots: Mutex::new(slots) })
    }

    pub(crate) fn free(&self) -> u32 {
        self.capacity - *self.reserved.lock().unwrap()
    }
}

/// Slots held by one listener; given back when dropped.
pub(crate) struct Reservation {
    budget: Arc<SlotBudget>,
    slots: Mutex<u32>,
}

impl Reservation {
    /// Gives back all but `slots` (a removed listener keeps one per open
    /// connection: it accepts no more, and its spares are dropped).
    pub(crate) fn shrink_to(&self, slots: u32) {
        let mut held = self.slots.lock().unwrap();
        let freed = held.saturating_sub(slots);
        *self.budget.reserved.lock().unwrap() -= freed;
        *held -= freed;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reserved_up_to_capacity_and_given_back() {
        let budget = Arc::new(SlotBudget { capacity: 10, reserved: Mutex::new(0) });
        let a = budget.reserve(6).expect("fits");
        assert!(budget.reserve(5).is_none(), "6 + 5 is past 10");
        let b = budget.reserve(4).expect("fits exactly");
        assert_eq!(budget.free(), 0);
        // A removed listener keeps one slot per open connection.
        a.shrink_to(2);
        assert_eq!(budget.free(), 4);
        drop(b);
        assert_eq!(budget.free(), 8);
        drop(a);
        assert_eq!(budget.free(), 10);
    }
}
