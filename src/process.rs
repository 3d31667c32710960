//! Settings of the whole process that the node makes once, at start, before it starts threads.
//!
//! The node's allocator is mimalloc: against glibc's malloc (capped at two arenas for memory)
//! it halved the p999 of the creates over HTTP, and made the searches over HTTP about 10% and
//! the in-process creates about 3% faster (`docs/performance.md`, step 24). The binary and the
//! benches install it the same way:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: outpost::process::Allocator = outpost::process::Allocator;
//! ```
//! and call [`configure_allocator`] first thing in `main`.
//!
//! The process also runs without transparent huge pages (THP), as databases commonly advise
//! (Redis, MongoDB): mimalloc asks for them on its arenas, and with memory given back to the OS
//! after [`PURGE_DELAY_MS`], the next touch of a purged range faulted in a whole 2 MiB page and
//! the kernel zeroed it. That zeroing was 13% of the writer thread's time under group commit
//! (`docs/performance.md`, step 35).

use std::os::raw::c_long;

/// The allocator the node runs on.
pub use mimalloc::MiMalloc as Allocator;

/// How long mimalloc keeps freed memory before it gives it back to the OS, in milliseconds.
/// Its default (1 s) kept the P7 process at 198 MiB against 118 MiB with glibc; 2 ms keeps it
/// at about 138 MiB and part of the search rate gained (0 ms: 129 MiB, and glibc's rate).
pub const PURGE_DELAY_MS: c_long = 2;

/// `mi_option_purge_delay`: its place in `mi_option_e` of the mimalloc that the pinned
/// `libmimalloc-sys` builds (the crate names no constant for it). The pin in `Cargo.toml` keeps
/// the two in step; a test checks the option holds mimalloc's default or ours.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's own default for [`MI_OPTION_PURGE_DELAY`] (v3), what the option reads before
/// [`configure_allocator`].
#[cfg(test)]
const MIMALLOC_DEFAULT_PURGE_DELAY_MS: c_long = 1_000;

/// Sets the allocator's options ([`PURGE_DELAY_MS`]) and turns transparent huge pages off for
/// the process. Call at the start of `main`, before other threads start.
pub fn configure_allocator() {
    // SAFETY: `mi_option_set` only stores an option value, which mimalloc reads when it next
    // purges; it is safe to call at any time, from any thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
    disable_transparent_huge_pages();
}

/// Turns transparent huge pages off for this process and its children (`PR_SET_THP_DISABLE`;
/// it covers memory mapped before the call too). A kernel that refuses it leaves THP as the
/// system has it: a cost in speed only, so the node starts anyway.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: `prctl` with `PR_SET_THP_DISABLE` sets one flag of the process; the unused
    // arguments must be zero.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

/// The nice value of a helper thread of the writer ([`yield_to_the_writer`]).
pub const HELPER_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to [`HELPER_NICE`]: a helper that works beside the
/// writer (preparing a download's next chunk, writing its views) must not take the core the
/// writer waits for, and has time to spare. A kernel that refuses leaves the thread as it is:
/// a cost in speed only.
#[cfg(target_os = "linux")]
pub fn yield_to_the_writer() {
    // SAFETY: `gettid` has no preconditions; `setpriority` with `PRIO_PROCESS` and a thread id
    // sets that one thread's nice value.
    let _ = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            HELPER_NICE,
        )
    };
}

/// Lowers the calling thread's priority (not on this system).
#[cfg(not(target_os = "linux"))]
pub fn yield_to_the_writer() {}

/// Most threads in the async runtime's blocking pool (store reads, backups, opening and closing
/// the store). Store reads are bounded apart (`store.max_concurrent_reads`), but tokio starts a
/// new thread whenever no idle one is ready at that instant: under 64 tills searching, the pool
/// grew to 68 threads, each keeping its own allocator pages (the P7 process at 223 MiB; with
/// this bound 21 threads and 126 MiB).
pub const MAX_BLOCKING_THREADS: usize = 16;

/// The builder of the node's async runtime, its blocking pool bounded.
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all();
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> c_long {
        // SAFETY: reads an option value.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_purge_delay_option_is_the_one_configured() {
        // Another test of this process may have configured it already.
        let before = purge_delay();
        assert!(
            before == MIMALLOC_DEFAULT_PURGE_DELAY_MS || before == PURGE_DELAY_MS,
            "option {MI_OPTION_PURGE_DELAY} reads {before}: not mimalloc's purge delay"
        );
        configure_allocator();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off_once_configured() {
        configure_allocator();
        // SAFETY: reads one flag of the process.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1, "PR_GET_THP_DISABLE after configure_allocator");
    }
}
