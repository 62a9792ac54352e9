//! Giving freed memory back to the system. glibc's allocator keeps what a
//! program frees in its arenas (one per thread that allocated) for reuse,
//! and returns a page only when the top of an arena is free: after ten
//! thousand agents left, the manager kept ~600 MiB it no longer used,
//! scattered between a few live allocations. `malloc_trim(0)` hands the
//! free pages of every arena back (`madvise`), whatever surrounds them.
//!
//! This is the workspace's one unsafe call, kept alone here: every other
//! crate forbids unsafe code.

/// Returns the allocator's free pages to the system; whether any were.
/// Off glibc it does nothing and says `false`.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and works on the
        // allocator's own state under the arenas' locks (MT-Safe in
        // glibc's manual); nothing of ours is touched.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_can_be_given_back() {
        // Many small blocks, freed: their pages are free inside the heap.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![(i % 251) as u8; 1024]).collect();
        let keep: Vec<Vec<u8>> = blocks.iter().step_by(1000).cloned().collect();
        drop(blocks);
        let released = release_free_memory();
        assert_eq!(keep.len(), 20);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                released,
                "malloc_trim returned nothing after 20 MiB were freed"
            );
        }
    }
}
