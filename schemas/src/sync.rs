//! One policy for poisoned locks, everywhere: recover the data, never skip the work.
//!
//! A std `Mutex` is poisoned when a thread panics while holding it. Every mutex in ChaosEater guards a
//! cache, a view or a set of switches whose every change is one assignment, insert or removal, so what
//! a panicking holder leaves behind is a whole value; skipping the work instead (a fault's revert, an
//! abort switch, a metric, a journal entry) would be the silent defect. The panic itself is reported
//! where it happened (the task's error, the supervisor's restart).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering its data if a panicking holder poisoned it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_hands_out_its_data() {
        let shared = std::sync::Arc::new(Mutex::new(vec![1]));
        let holder = std::sync::Arc::clone(&shared);
        let _ = std::thread::spawn(move || {
            let mut v = holder.lock().expect("first lock");
            v.push(2);
            panic!("while holding the lock");
        })
        .join();
        assert!(shared.is_poisoned());
        lock(&shared).push(3);
        assert_eq!(*lock(&shared), [1, 2, 3]);
    }
}
