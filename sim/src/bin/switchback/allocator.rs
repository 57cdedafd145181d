//! The allocator of the gateway's binaries (`switchback` and `switchback-gateway`): mimalloc,
//! with its arenas committed lazily and its free pages purged at once, from before `main`.
//!
//! Owns: the global allocator and the constructor that sets mimalloc's defaults. Does not own
//! anything else; both binaries include this file as a module of their own.

/// mimalloc rather than the system allocator: a request allocates for every chunk it
/// parses, on threads that run side by side, where glibc's malloc pays for its arena locks
/// (see the README's benchmarks for the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (its place in `mi_option_e`, mimalloc v3's
/// `include/mimalloc.h`; `libmimalloc-sys` names only some of the options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// mimalloc's `purge_delay` option, in milliseconds (its place in `mi_option_e`, as above).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's defaults for the gateway, set before any allocation:
///
/// * arenas are committed as they are used rather than eagerly (its default on Linux): with
///   1,000 concurrent streams the gateway's peak RSS is then about 55 MiB instead of
///   85 MiB, for the same CPU;
/// * a page that falls free is purged (given back to the OS) at once rather than after a
///   second (v3's default, 1,000 ms): what the load before them and their own admission
///   freed stayed resident for that second beside what 1,000 starting streams went on to
///   take. The purges cost no CPU that the benchmark can see. Peak RSS with 1,000 streams
///   after a full `bench-overhead` load, three runs each in turns (2026-12-08): 54.4 / 54.7
///   / 54.9 MiB at the default, 53.4 / 52.9 / 52.6 MiB purged at once, with the same CPU
///   per request (134–142 µs against 136–141 µs with no fault, 208–220 against 213–221 µs
///   for the mid-stream variant). See the README's benchmarks.
///
/// Why a constructor: the first arena is reserved at the first allocation, before `main`,
/// so the defaults must be set before any Rust code runs. `.init_array` entries run in the
/// order of their priority, then the unprioritised ones: 100 comes before mimalloc's own
/// initialiser (101 when clang builds it, unprioritised under gcc). Earlier the
/// default came from a `CFLAGS` in `.cargo/config.toml`; cargo reads that file from the
/// directory it is run in, so `cargo install --path sim` or `cargo build --manifest-path`
/// from anywhere else silently built a binary with the 85 MiB peak. Only the defaults are
/// set: `MIMALLOC_ARENA_EAGER_COMMIT` and `MIMALLOC_PURGE_DELAY` in the environment still
/// override them.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00100")]
static ALLOCATOR_DEFAULTS: extern "C" fn() = {
    extern "C" fn allocator_defaults() {
        // SAFETY: sets two options' defaults; mimalloc's options are plain statics that it
        // reads on first use, and no other thread exists yet.
        unsafe {
            libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0);
        }
    }
    allocator_defaults
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails if the constructor is gone or stops setting one of its defaults (removing the
    /// purge line reads mimalloc's own 1,000 ms). The peak they are for is measured by
    /// `bench-overhead --streams 1000`, not here.
    #[cfg(target_os = "linux")]
    #[test]
    fn mimalloc_starts_with_the_gateways_defaults() {
        for (variable, option) in [
            ("MIMALLOC_ARENA_EAGER_COMMIT", MI_OPTION_ARENA_EAGER_COMMIT),
            ("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY),
        ] {
            if std::env::var_os(variable).is_some() {
                continue; // the environment's choice wins, by design
            }
            // SAFETY: reads one option.
            let value = unsafe { libmimalloc_sys::mi_option_get(option) };
            assert_eq!(value, 0, "the default behind {variable}");
        }
    }
}
