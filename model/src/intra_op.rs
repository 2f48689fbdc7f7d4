//! Parallel loops on libtorch's own intra-op threads (its OpenMP team), for the Rust kernels that
//! run between libtorch operations (`decoder/fused_decode.rs`, `decoder/fused_train.rs`) and for
//! the rollout engine's sampler.
//!
//! Threads of our own would compete for the cores with the OpenMP workers, which spin for a while
//! after every libtorch operation before they sleep: on 2 cores, the fused decode's attention on
//! two threads of its own ran slower than on one (24.5M bench model: 1,306 against 1,399
//! tokens/s). Handing the loop to the same team (through `GOMP_parallel`, the entry point that
//! compilers emit for `#pragma omp parallel`, which GNU and LLVM OpenMP runtimes both provide)
//! uses the workers that are already awake. Where no OpenMP runtime is loaded, the loop runs on
//! the calling thread.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`:
/// runs `fn(data)` on `num_threads` threads, the caller's included, and returns when all are done.
type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);

fn gomp_parallel() -> Option<GompParallel> {
    static ENTRY: OnceLock<Option<GompParallel>> = OnceLock::new();
    *ENTRY.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: a lookup of a NUL-terminated name among the loaded libraries.
            let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"GOMP_parallel".as_ptr()) };
            // SAFETY: the symbol, when present, is the OpenMP runtime's entry point of this type.
            (!symbol.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, GompParallel>(symbol) })
        }
        #[cfg(not(unix))]
        None
    })
}

thread_local! {
    /// Whether this thread is running a task of `parallel_for`.
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads a parallel loop started here may use: libtorch's intra-op threads, or 1 inside a task
/// of `parallel_for` (the team is busy; libtorch's own operations run single-threaded there too).
pub fn threads() -> usize {
    if IN_TASK.get() {
        1
    } else {
        tch::get_num_threads().max(1) as usize
    }
}

/// Runs `task(i)` for every `i` in `0..tasks` on up to `threads` of libtorch's intra-op threads
/// (the calling thread is one of them), each taking the next task until none is left. Returns
/// when all are done; panics if a task panicked.
pub fn parallel_for(tasks: usize, threads: usize, task: impl Fn(usize) + Sync) {
    let threads = threads.min(tasks);
    let parallel = match gomp_parallel() {
        Some(parallel) if threads > 1 => parallel,
        _ => return (0..tasks).for_each(task),
    };
    struct Shared<'a> {
        next: AtomicUsize,
        tasks: usize,
        task: &'a (dyn Fn(usize) + Sync),
        panicked: AtomicBool,
    }
    extern "C" fn run(data: *mut c_void) {
        // SAFETY: `data` is the `Shared` below, alive until `GOMP_parallel` returns.
        let shared = unsafe { &*(data as *const Shared<'_>) };
        loop {
            let i = shared.next.fetch_add(1, Ordering::Relaxed);
            if i >= shared.tasks {
                break;
            }
            // A panic must not unwind into the OpenMP runtime.
            let was_in_task = IN_TASK.replace(true);
            if catch_unwind(AssertUnwindSafe(|| (shared.task)(i))).is_err() {
                shared.panicked.store(true, Ordering::Relaxed);
            }
            IN_TASK.set(was_in_task);
        }
    }
    let shared = Shared { next: AtomicUsize::new(0), tasks, task: &task, panicked: AtomicBool::new(false) };
    // SAFETY: `run` only reads `shared` through the pointer, and the call returns after every
    // thread has finished with it.
    unsafe { parallel(run, &shared as *const Shared<'_> as *mut c_void, threads as u32, 0) };
    assert!(!shared.panicked.load(Ordering::Relaxed), "a task of a parallel loop panicked");
}

/// Runs `task(i, part)` for every part of `parts`, each moved to whichever of up to `threads`
/// of libtorch's threads takes it (see `parallel_for`): disjoint pieces of memory worked on in
/// parallel.
pub fn parallel_parts<T: Send>(parts: Vec<T>, threads: usize, task: impl Fn(usize, T) + Sync) {
    let parts: Vec<Mutex<Option<T>>> = parts.into_iter().map(|part| Mutex::new(Some(part))).collect();
    parallel_for(parts.len(), threads, |i| {
        let part = parts[i].lock().expect("a part").take().expect("each part once");
        task(i, part);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once() {
        tch::set_num_threads(2);
        let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        super::parallel_for(counts.len(), 2, |i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    #[should_panic(expected = "panicked")]
    fn a_panicking_task_panics_the_caller() {
        super::parallel_for(4, 2, |i| assert!(i != 2));
    }
}
