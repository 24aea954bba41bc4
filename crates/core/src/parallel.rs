//! Parallel autodiff work that cannot deadlock: *exclusive lanes*.
//!
//! burn-autodiff 0.21 holds a graph's mutex for the whole of a backward pass, and every thread
//! that finishes a backward pass then locks *every* live graph of the process in turn (its
//! orphan clean-up). burn-flex and burn-ndarray run their kernels on rayon: on the pool of the
//! calling thread if it is a rayon worker, else on rayon's *global* pool. So a backward pass whose
//! kernels wait for a pool deadlocks as soon as that pool's workers are themselves finishing
//! backward passes (they block on its graph lock and never run its kernels), and a rayon worker
//! that waits inside a backward pass can steal a queued task that needs the lock it holds.
//!
//! The rule this module implements, and that every metalearn crate follows:
//!
//! - **Autodiff work runs only on an exclusive lane**: a private rayon pool checked out by one
//!   job at a time, whose workers run nothing but that job and the kernels it spawns. A backward
//!   pass waits only on its own lane, whose threads never wait on an autodiff lock.
//! - **Task parallelism is lanes, not `par_iter`**: [`TaskPool::map`] runs items on one lane
//!   each (dynamically balanced, gathered in item order, so results do not depend on the number
//!   of threads). Nothing metalearn runs on rayon's global pool takes an autodiff lock, so the
//!   global pool is always free for kernels of threads outside any lane.
//! - A panic inside a job (e.g. burn's "Can't differentiate linear_weight_backward") is caught
//!   and returned as [`Error::TaskPanicked`], with a hint when it is a known burn 0.21
//!   second-order limit; the caller's state is untouched.
//!
//! Users may call every metalearn API from any thread — their own threads, rayon's global pool,
//! their own pools — because each entry point that differentiates hops onto a lane
//! ([`run_exclusive`], [`backward`]). Users who run *their own* backward passes concurrently
//! with ours should do the same (wrap them in [`run_exclusive`] or call [`backward`]), or at
//! least never run autodiff work on rayon's global pool.

use crate::{Error, Result};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

thread_local! {
    static LANE_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Idle lanes kept for reuse (per process); more are dropped when returned.
const MAX_IDLE_LANES: usize = 32;

static IDLE: Mutex<Vec<Lane>> = Mutex::new(Vec::new());
static LANE_IDS: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A private rayon pool; exclusive to whoever holds its [`LaneGuard`].
struct Lane {
    pool: rayon::ThreadPool,
    threads: usize,
}

/// A checked-out lane, returned to the idle list on drop.
struct LaneGuard(Option<Lane>);

impl LaneGuard {
    fn acquire(threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let reused = {
            let mut idle = lock(&IDLE);
            idle.iter()
                .position(|l| l.threads == threads)
                .map(|i| idle.swap_remove(i))
        };
        let lane = match reused {
            Some(l) => l,
            None => {
                let id = LANE_IDS.fetch_add(1, Ordering::Relaxed);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("metalearn-lane-{id}.{i}"))
                    .start_handler(|_| LANE_WORKER.with(|w| w.set(true)))
                    .build()
                    .map_err(|e| Error::ThreadPool(e.to_string()))?;
                Lane { pool, threads }
            }
        };
        Ok(Self(Some(lane)))
    }

    /// Run `f` on this lane (the caller blocks; a rayon worker of another pool keeps serving
    /// its own pool meanwhile, which is safe because the lane never waits on that pool).
    fn run<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        match &self.0 {
            Some(lane) => lane.pool.install(|| caught(f)),
            None => caught(f),
        }
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if let Some(lane) = self.0.take() {
            let mut idle = lock(&IDLE);
            if idle.len() < MAX_IDLE_LANES {
                idle.push(lane);
            }
        }
    }
}

/// Whether the current thread is a worker of an exclusive lane (so autodiff work may run here
/// directly).
pub fn in_lane() -> bool {
    LANE_WORKER.with(Cell::get)
}

/// The number of threads metalearn uses when a config says `0` ("all cores").
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Run `f`, turning a panic into [`Error::TaskPanicked`].
pub fn caught<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Error::panicked(&panic_message(&*p))))
}

/// Run `f` on an exclusive lane of `threads` threads (`0` = all cores) and wait for it; inline
/// when the caller already is on one. Panics in `f` become [`Error::TaskPanicked`].
pub fn run_exclusive<R: Send>(threads: usize, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    if in_lane() {
        return caught(f);
    }
    let threads = if threads == 0 {
        available_threads()
    } else {
        threads
    };
    LaneGuard::acquire(threads)?.run(f)
}

/// `loss.backward()` on an exclusive lane (see the module docs): what every metalearn learner
/// calls instead of `Tensor::backward`. A panic in burn (an op that cannot be differentiated
/// twice, a shape error) becomes a typed error.
pub fn backward<A: AutodiffBackend, const D: usize>(loss: Tensor<A, D>) -> Result<A::Gradients>
where
    A::Gradients: Send,
{
    run_exclusive(0, move || Ok(loss.backward()))
}

/// Runs independent jobs in parallel on exclusive lanes: `threads` threads in all, split into
/// one lane per job (at most `threads` lanes; a single job gets all of them for its kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPool {
    threads: usize,
}

impl TaskPool {
    /// A pool of `threads` threads; `0` means all cores.
    pub fn new(threads: usize) -> Self {
        Self {
            threads: if threads == 0 {
                available_threads()
            } else {
                threads
            },
        }
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on an exclusive lane with all the pool's threads (inline when already on one).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        run_exclusive(self.threads, f)
    }

    /// `f(i, item)` for every item, in parallel on lanes; the results in item order, or the
    /// error of the first item (in order) that failed. A panic in `f` is that item's
    /// [`Error::TaskPanicked`].
    pub fn map<T: Send, R: Send>(
        &self,
        items: Vec<T>,
        f: impl Fn(usize, T) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        let n = items.len();
        let lanes = self.threads.min(n);
        if lanes <= 1 {
            // One lane does it all: the caller's lane, or one checked out for the whole batch.
            return self.run(|| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| caught(|| f(i, t)))
                    .collect()
            });
        }
        let per_lane = (self.threads / lanes).max(1);
        let guards = (0..lanes)
            .map(|_| LaneGuard::acquire(per_lane))
            .collect::<Result<Vec<_>>>()?;
        let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
        let results: Vec<Mutex<Option<Result<R>>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let drain = || -> Result<()> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let r = match lock(&slots[i]).take() {
                    Some(item) => caught(|| f(i, item)),
                    None => Err(Error::ThreadPool(format!("item {i} taken twice"))),
                };
                *lock(&results[i]) = Some(r);
            }
        };
        std::thread::scope(|s| -> Result<()> {
            let (first, rest) = guards.split_first().ok_or(Error::Empty("lanes"))?;
            let helpers: Vec<_> = rest
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    std::thread::Builder::new()
                        .name(format!("metalearn-dispatch-{}", k + 1))
                        .spawn_scoped(s, || g.run(drain))
                })
                .collect();
            let mut outcome = first.run(drain);
            for h in helpers {
                let r = match h {
                    Ok(h) => h
                        .join()
                        .unwrap_or_else(|p| Err(Error::panicked(&panic_message(&*p)))),
                    // No helper thread: the lanes already running drain the queue.
                    Err(_) => Ok(()),
                };
                outcome = outcome.and(r);
            }
            outcome
        })?;
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| Err(Error::ThreadPool(format!("item {i} was not run"))))
            })
            .collect()
    }
}

impl Default for TaskPool {
    fn default() -> Self {
        Self::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_order_and_runs_on_lanes() {
        for threads in [1, 2, 3, 8] {
            let pool = TaskPool::new(threads);
            let out = pool
                .map((0..20).collect(), |i, x: usize| {
                    assert!(in_lane(), "item {i} ran outside a lane");
                    Ok(x * x)
                })
                .unwrap();
            assert_eq!(out, (0..20).map(|x| x * x).collect::<Vec<_>>());
        }
        assert!(!in_lane());
    }

    #[test]
    fn map_returns_the_first_error_in_order_and_catches_panics() {
        let pool = TaskPool::new(2);
        let r = pool.map((0..6).collect(), |i, _: usize| {
            if i == 4 {
                panic!("Can't differentiate linear_weight_backward.");
            }
            if i == 5 {
                return Err(Error::Empty("late"));
            }
            Ok(i)
        });
        match r {
            Err(Error::TaskPanicked { message, hint }) => {
                assert!(message.contains("linear_weight_backward"), "{message}");
                assert!(hint.contains("Dense"), "{hint}");
            }
            other => panic!("expected a caught panic, got {other:?}"),
        }
    }

    #[test]
    fn nested_maps_do_not_deadlock() {
        let outer = TaskPool::new(3);
        let out = outer
            .map((0..6).collect(), |_, x: usize| {
                TaskPool::new(2)
                    .map((0..4).collect(), |_, y: usize| Ok(x * 10 + y))
                    .map(|v| v.into_iter().sum::<usize>())
            })
            .unwrap();
        assert_eq!(out, (0..6).map(|x| 40 * x + 6).collect::<Vec<_>>());
    }

    #[test]
    fn run_exclusive_from_the_global_pool() {
        use rayon::prelude::*;
        let v: Vec<usize> = (0..8)
            .into_par_iter()
            .map(|i| run_exclusive(1, || Ok(in_lane() as usize + i)).unwrap())
            .collect();
        assert_eq!(v, (1..9).collect::<Vec<_>>());
    }
}
