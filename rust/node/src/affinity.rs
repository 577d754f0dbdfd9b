//! Pinning pipeline threads to cores.
//!
//! A busy-spinning stage ([`crate::wait::WaitStrategy::BusySpin`]) should own a core: pin it
//! here, and keep other work off that core (`isolcpus`/`nohz_full`, or at least no other
//! pinned thread). Core ids are the operating system's logical CPU numbers.

/// Pins the calling thread to logical core `core`; `None` leaves the thread unpinned.
///
/// # Errors
///
/// A message naming the core when it does not exist (or is not in this process's allowed
/// set), when the cores cannot be listed, or when the operating system refuses.
pub fn pin_current_thread(core: Option<usize>) -> Result<(), String> {
    let Some(core) = core else {
        return Ok(());
    };
    let ids = core_affinity::get_core_ids()
        .ok_or_else(|| format!("cannot pin to core {core}: the cores cannot be listed"))?;
    let Some(&id) = ids.iter().find(|id| id.id == core) else {
        let available: Vec<usize> = ids.iter().map(|id| id.id).collect();
        return Err(format!("cannot pin to core {core}: no such core (available: {available:?})"));
    };
    if core_affinity::set_for_current(id) {
        Ok(())
    } else {
        Err(format!("cannot pin to core {core}: the operating system refused"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_a_no_op_and_missing_core_is_an_error() {
        assert_eq!(pin_current_thread(None), Ok(()));
        let err = pin_current_thread(Some(100_000)).unwrap_err();
        assert!(err.contains("core 100000") && err.contains("no such core"), "{err}");
    }

    #[test]
    fn pins_to_an_existing_core() {
        let first = core_affinity::get_core_ids().unwrap()[0].id;
        // In a scoped thread, so the test harness thread keeps its affinity.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(pin_current_thread(Some(first)), Ok(()))).join().unwrap();
        });
    }
}
