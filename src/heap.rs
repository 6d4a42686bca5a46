//! Heap memory freed by one stage of a run, given back before the next takes its own.

/// Return the free pages the allocator keeps. glibc keeps freed memory in per-thread
/// arenas, so without this an upload's buffers stack on the export's leftovers and a
/// run's peak memory is the sum of both stages, not the larger.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
