//! Settings of the whole process that the node makes once, at start, before it starts threads.

/// Most malloc arenas glibc may keep. By default glibc gives each thread that finds the other
/// arenas busy an arena of its own, up to eight per core, and keeps what each arena once held:
/// serving 64 tills' searches at a million customers, that was 267 MiB peak against 129 MiB
/// with two arenas (P7, `docs/performance.md`).
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] (nothing on other C libraries). Call at the
/// start of `main`, before any other thread exists.
pub fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a parameter of the allocator; called before other threads
    // exist, nothing allocates concurrently. Its answer (1 = done) changes nothing we do.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}
