//! The allocator of the gateway's binaries (`switchback` and `switchback-gateway`): mimalloc,
//! with its arenas committed lazily from before `main`.
//!
//! Owns: the global allocator and the constructor that sets mimalloc's default. Does not own
//! anything else; both binaries include this file as a module of their own.

/// mimalloc rather than the system allocator: a request allocates for every chunk it
/// parses, on threads that run side by side, where glibc's malloc pays for its arena locks
/// (see the README's benchmarks for the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (its place in `mi_option_e`, mimalloc v3's
/// `include/mimalloc.h`; `libmimalloc-sys` names only some of the options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// mimalloc commits its arenas as they are used rather than eagerly (its default on Linux).
/// With 1,000 concurrent streams the gateway's peak RSS is then about 55 MiB instead of
/// 85 MiB, for the same CPU.
///
/// Why a constructor: the first arena is reserved at the first allocation, before `main`,
/// so the default must be set before any Rust code runs. `.init_array` entries run in the
/// order of their priority, then the unprioritised ones: 100 comes before mimalloc's own
/// initialiser (101 when clang builds it, unprioritised under gcc). Earlier the
/// default came from a `CFLAGS` in `.cargo/config.toml`; cargo reads that file from the
/// directory it is run in, so `cargo install --path sim` or `cargo build --manifest-path`
/// from anywhere else silently built a binary with the 85 MiB peak. Only the default is set:
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still overrides it.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00100")]
static LAZY_ARENA_COMMIT: extern "C" fn() = {
    extern "C" fn lazy_arena_commit() {
        // SAFETY: sets one option's default; mimalloc's options are plain statics that it
        // reads on first use, and no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
    }
    lazy_arena_commit
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails if the constructor is gone. (The peak it is for is
    /// measured by `bench-overhead --streams 1000`, not here.)
    #[cfg(target_os = "linux")]
    #[test]
    fn mimalloc_commits_its_arenas_lazily_by_default() {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
            return; // the environment's choice wins, by design
        }
        // SAFETY: reads one option.
        let eager = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) };
        assert_eq!(eager, 0);
    }
}
