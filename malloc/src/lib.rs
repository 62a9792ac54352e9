//! The daemons' memory allocator, and giving freed memory back to the
//! system.
//!
//! The manager and the agent allocate and free a few small blocks per log
//! line (the line, its decoded fields, the event around them), most of
//! them freed on another thread than the one that allocated them (decoded
//! on the blocking pool, judged on the engine thread, stored on a tokio
//! worker). glibc's allocator took 25-30 % of the manager's CPU on that
//! path in a profile (`malloc_consolidate` on every large free, arena
//! locks on cross-thread frees); mimalloc, with per-thread free lists
//! and cheap remote frees, does the same work for a fraction of it. Each
//! daemon's `main` installs [`Allocator`] as its global allocator; the
//! libraries do not, so tests and embedders keep theirs.
//!
//! Freed memory is returned to the system by mimalloc on its own (after a
//! short delay) and on demand by [`release_free_memory`]; what C code
//! allocates (SQLite) stays with glibc, whose arenas keep what is freed
//! and return a page only when the top of an arena is free: after ten
//! thousand agents left, the manager kept ~600 MiB it no longer used,
//! scattered between a few live allocations. `malloc_trim(0)` hands the
//! free pages of every arena back (`madvise`), whatever surrounds them.
//!
//! Transparent huge pages are turned off for the daemons
//! ([`without_huge_pages`]): mimalloc asks for them on its arenas
//! (`madvise(MADV_HUGEPAGE)`), then returns free 64 KiB ranges inside
//! them, and the next allocation there faults in and zeroes a whole new
//! 2 MiB page. Under a burst of lines that zeroing took 7 % of the
//! manager's CPU and 11 % of the agent's in a profile, and doubled the
//! manager's peak memory (71 instead of 128 MiB in the end-to-end bench).
//!
//! This is the workspace's one unsafe code, kept alone here: every other
//! crate forbids unsafe code.

/// The global allocator of Palisade's programs:
/// `#[global_allocator] static ALLOCATOR: palisade_malloc::Allocator = palisade_malloc::Allocator;`
pub use mimalloc::MiMalloc as Allocator;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Releases asked for so far ([`release_free_memory`]); each runtime
/// thread collects its own heap once per release ([`collect_if_released`]).
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The release this thread collected its heap for last.
    static COLLECTED: Cell<u64> = const { Cell::new(0) };
}

/// For a runtime's `on_thread_park`: after a [`release_free_memory`],
/// collects this thread's mimalloc heap once. A thread's heap owns the
/// pages it allocated; blocks that other threads free go back to them
/// but the pages are found empty, and returned, only when their owner
/// collects: 10 s after ten thousand agents left, `mi_collect` on one
/// thread alone left the manager at 263 of its 628 MiB; with every
/// thread collecting, 76 of 581 MiB (the idle manager: 32).
pub fn collect_if_released() {
    let release = RELEASES.load(Ordering::Relaxed);
    COLLECTED.with(|collected| {
        if collected.get() != release {
            collected.set(release);
            // SAFETY: as in release_free_memory.
            #[allow(unsafe_code)]
            unsafe {
                libmimalloc_sys::mi_collect(true)
            };
        }
    });
}

/// Returns the allocators' free pages to the system: mimalloc's (when it
/// is the global allocator; the runtime threads' heaps when they next
/// park, see [`collect_if_released`]) and glibc's; whether glibc gave any
/// back (off glibc: `false`).
pub fn release_free_memory() -> bool {
    RELEASES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: mi_collect takes no pointers; it frees what the calling
    // thread's heap and the abandoned heaps no longer use, under
    // mimalloc's own synchronisation (callable from any thread).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
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

/// Turns transparent huge pages off for this process (and the programs
/// it starts, which inherit the setting), whatever mimalloc asked for
/// its arenas: called first thing by each daemon's `main`, before much is
/// allocated. Besides the CPU (module doc), a few KiB in use kept a whole
/// 2 MiB page resident: on the fleet bench (10,000 idle agents, THP
/// `madvise`) 592 of the manager's 777 MiB were huge pages, 75 KiB per
/// agent; with them off 61 KiB, and the idle manager 30 MiB instead of
/// 46. Returns whether the kernel took it (always `false` off Linux).
pub fn without_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers only and sets
        // a flag on this process's memory map; no memory is touched.
        #[allow(unsafe_code)]
        let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        done == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_turned_off() {
        assert!(without_huge_pages());
        // SAFETY: PR_GET_THP_DISABLE takes integers only and reads a flag.
        #[allow(unsafe_code)]
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    #[test]
    fn freed_memory_can_be_given_back() {
        // Many small blocks, freed: their pages are free inside the heap.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![(i % 251) as u8; 1024]).collect();
        let keep: Vec<Vec<u8>> = blocks.iter().step_by(1000).cloned().collect();
        drop(blocks);
        let released = release_free_memory();
        collect_if_released();
        assert_eq!(keep.len(), 20);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                released,
                "malloc_trim returned nothing after 20 MiB were freed"
            );
        }
    }
}
