//! How many threads a kernel may use: every core by default, capped by `set` (the C ABI's
//! `fluxc_NAME_set_threads`, the CLI's `--threads` and `FLUXC_NUM_THREADS`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cap; 0 means "no cap".
static CAP: AtomicUsize = AtomicUsize::new(0);

/// Caps the threads a call may use (`n < 1` removes the cap).
pub fn set(n: i64) {
    CAP.store(usize::try_from(n).unwrap_or(0), Ordering::Relaxed);
}

/// The threads a call may use now: at least 1.
pub fn get() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    match CAP.load(Ordering::Relaxed) {
        0 => cores,
        cap => cap.min(cores),
    }
}
