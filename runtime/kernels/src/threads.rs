//! How many threads a kernel may use (every core by default, capped by `set`: the C ABI's
//! `fluxc_NAME_set_threads`, the CLI's `--threads` and `FLUXC_NUM_THREADS`), and the pool that
//! runs a kernel's parts on them.
//!
//! Starting a thread costs about 60 µs on the machines measured, as much as a whole 4 MFLOP
//! product, so the workers are started once and kept: after a job a worker spins briefly for
//! the next (a train step hands out one every few dozen µs), then sleeps until woken.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The cap; 0 means "no cap".
static CAP: AtomicUsize = AtomicUsize::new(0);

/// Caps the threads a call may use (`n < 1` removes the cap).
pub fn set(n: i64) {
    CAP.store(usize::try_from(n).unwrap_or(0), Ordering::Relaxed);
}

/// The threads a call may use now: at least 1.
pub fn get() -> usize {
    let cores = cores();
    match CAP.load(Ordering::Relaxed) {
        0 => cores,
        cap => cap.min(cores),
    }
}

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs `f(0)`, …, `f(parts - 1)`, spread over the calling thread and the pool's workers, and
/// returns when all have finished (a panic in a part is raised here after that). The parts
/// run inline when there is one, when the pool is busy with another caller's job, or when no
/// worker could be started.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 {
        if parts == 1 {
            f(0);
        }
        return;
    }
    let Some(pool) = pool() else { return inline(parts, f) };
    // (A part that panicked in an earlier job poisoned the lock; the pool is still sound.)
    let _turn = match pool.submit.try_lock() {
        Ok(turn) => turn,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return inline(parts, f),
    };
    // SAFETY: the job's pointer to `f` is only followed for a claimed part, and every part is
    // claimed and finished before this function returns (it waits for `done == parts` below),
    // so `f` outlives every use; the lifetime is erased only to pass it to the workers.
    #[allow(unsafe_code)]
    let erased: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    let job = Arc::new(Job {
        f: erased,
        parts,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    });
    *pool.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&job));
    // The spinning workers see the new epoch at once; the lock is not held meanwhile, so the
    // first to see it does not fall asleep on it. Sleeping workers are woken (a system call)
    // only when there are any: a worker counts itself asleep before it checks the epoch a
    // last time, and this side bumps the epoch before it reads the count (both sequentially
    // consistent), so one of the two always sees the other.
    pool.epoch.fetch_add(1, Ordering::SeqCst);
    if pool.sleeping.load(Ordering::SeqCst) > 0 {
        let _slot = pool.slot.lock().unwrap_or_else(PoisonError::into_inner);
        pool.wake.notify_all();
    }
    job.work();
    while job.done.load(Ordering::Acquire) < parts {
        std::hint::spin_loop();
    }
    *pool.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
    if job.panicked.load(Ordering::Relaxed) {
        panic!("a kernel part panicked");
    }
}

/// Every part on the calling thread, a panic raised after the last (as `run` promises).
fn inline(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let mut panicked = false;
    for part in 0..parts {
        panicked |= std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(part))).is_err();
    }
    if panicked {
        panic!("a kernel part panicked");
    }
}

/// One `run` call's parts.
struct Job {
    f: &'static (dyn Fn(usize) + Sync),
    parts: usize,
    /// The next part to claim, and how many have finished.
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Claims and runs parts until none is left.
    fn work(&self) {
        loop {
            let part = self.next.fetch_add(1, Ordering::Relaxed);
            if part >= self.parts {
                return;
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.f)(part))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Pool {
    /// Held by the caller whose job the workers are on.
    submit: Mutex<()>,
    /// The current job, and a count of jobs handed out (workers spin on it).
    slot: Mutex<Option<Arc<Job>>>,
    epoch: AtomicU64,
    /// Workers asleep (or about to be) on `wake`.
    sleeping: AtomicUsize,
    wake: Condvar,
}

/// The pool, with one worker per core beyond the caller's (None if none could be started).
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let workers = cores().saturating_sub(1);
        if workers == 0 {
            return None;
        }
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            submit: Mutex::new(()),
            slot: Mutex::new(None),
            epoch: AtomicU64::new(0),
            sleeping: AtomicUsize::new(0),
            wake: Condvar::new(),
        }));
        let started = (0..workers)
            .filter(|k| {
                std::thread::Builder::new()
                    .name(format!("fluxc-worker-{k}"))
                    .spawn(move || worker(pool))
                    .is_ok()
            })
            .count();
        (started > 0).then_some(pool)
    })
}

/// How long a worker spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(100);

fn worker(pool: &'static Pool) {
    let mut seen = 0;
    loop {
        // Spin for a new job, then sleep until one is handed out.
        let start = Instant::now();
        let mut spins = 0u32;
        while pool.epoch.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut slot = pool.slot.lock().unwrap_or_else(PoisonError::into_inner);
                pool.sleeping.fetch_add(1, Ordering::SeqCst);
                while pool.epoch.load(Ordering::SeqCst) == seen {
                    slot = pool.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
                }
                pool.sleeping.fetch_sub(1, Ordering::SeqCst);
                break;
            }
        }
        seen = pool.epoch.load(Ordering::Acquire);
        let job = pool.slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    /// Every part runs exactly once, on whatever thread, across many back-to-back jobs (the
    /// workers spinning) and after a pause (the workers asleep).
    #[test]
    fn every_part_runs_once() {
        for round in 0..200 {
            if round == 100 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let parts = 1 + round % 7;
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            run(parts, &|p| {
                hits[p].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}");
        }
    }

    #[test]
    fn a_panicking_part_is_raised_after_all_parts_finish() {
        // Four parts, the second panicking: whether the panic came out, and how many finished.
        let panicking_run = || {
            let finished = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(4, &|p| {
                    if p == 1 {
                        panic!("part 1");
                    }
                    finished.fetch_add(1, Ordering::Relaxed);
                })
            }));
            (r.is_err(), finished.load(Ordering::Relaxed))
        };
        assert_eq!(panicking_run(), (true, 3));
        // The same when the parts run inline (the pool busy with another caller's job; on one
        // core there is no pool, and they always do).
        let busy = pool().map(|p| p.submit.lock().unwrap_or_else(PoisonError::into_inner));
        let inline = panicking_run();
        drop(busy);
        assert_eq!(inline, (true, 3));
        // The pool still works.
        let count = AtomicUsize::new(0);
        run(3, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }
}
