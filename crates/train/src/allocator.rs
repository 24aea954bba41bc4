//! Allocator settings for programs that train: the `metalearn` command and `metalearn-bench`
//! call [`keep_freed_memory_mapped`] first thing in `main`.
//!
//! A meta-iteration allocates and frees hundreds of MB of activations. mimalloc (our binaries'
//! global allocator) returns freed memory to the kernel after `MIMALLOC_PURGE_DELAY`
//! milliseconds (1,000 by default in mimalloc 3); a buffer that comes back after that is fresh
//! pages again, which the kernel zeroes on first touch. Measured on a Conv4 MAML++ training run
//! (release, 2 threads): `clear_page_erms` in the kernel took 22% of the samples, and an
//! iteration went from ~750 to ~490 ms when memory stayed mapped. The process then keeps its
//! peak memory for its lifetime, as with glibc's `MALLOC_TRIM_THRESHOLD_`.

/// The environment variable mimalloc reads once, at process start: milliseconds before freed
/// memory goes back to the kernel (`-1`: never).
pub const MIMALLOC_PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Runs this program again, in the same process (`exec`, same PID and arguments), with
/// `MIMALLOC_PURGE_DELAY=-1`, unless the variable is already set (a user's own value is kept).
///
/// mimalloc reads its options before `main` runs, so setting the variable in-process is too
/// late, and changing the option through mimalloc's C API would need `unsafe` code, which this
/// workspace forbids. Returns (and the program goes on with mimalloc's default) only where
/// `exec` is unavailable or fails; a failure is reported on stderr. Does nothing off Unix.
pub fn keep_freed_memory_mapped() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os(MIMALLOC_PURGE_DELAY).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        let err = command.args(args).env(MIMALLOC_PURGE_DELAY, "-1").exec();
        eprintln!(
            "warning: could not restart with {MIMALLOC_PURGE_DELAY}=-1 ({err}); \
             going on with mimalloc's default (slower: freed memory is returned to the kernel)"
        );
    }
}
