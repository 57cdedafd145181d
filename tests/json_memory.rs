//! What parsing JSON may cost in memory: no more than the distinct keys of each object,
//! however often an object repeats a key (an upstream's whole completion, a client's
//! request body). Its own binary, for the counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes held now and the most held since a reset.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let held = HELD.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(held, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn an_object_repeating_one_key_costs_one_entry() {
    let repeats = 170_000;
    let text = format!("{{\"x\":{{{}\"a\":1}}}}", "\"a\":0,".repeat(repeats));
    for parse in [switchback::json::from_str, |t: &str| {
        switchback::json::from_slice(t.as_bytes())
    }] {
        let before = HELD.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let value = parse(&text).expect("valid JSON");
        let peak = PEAK.load(Ordering::SeqCst) - before;
        assert_eq!(value["x"]["a"], 1, "the last value");
        assert!(
            peak < 256 * 1024,
            "{peak} bytes held at once for {} bytes of text with one distinct key",
            text.len()
        );
    }
}
