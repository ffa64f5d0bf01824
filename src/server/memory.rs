//! Process memory: the allocator, and memory given back to the system once idle.
//!
//! The process allocates through jemalloc (`tikv-jemallocator`, the allocator TiKV,
//! Databend and InfluxDB run under DataFusion-like loads), with its background threads
//! on: freed pages go back to the system on their own after `dirty_decay_ms`, with no
//! thread of ours walking the heap, and large Arrow buffers come from size-classed
//! extents instead of an mmap/munmap pair each. Two settings made by measurement
//! (docs/performance.md, "Allocator"):
//!
//! - glibc's malloc with its mmap threshold fixed at 128 kB (step 11's way of giving
//!   memory back) made every buffer above 128 kB an mmap and a munmap: the demo
//!   questions ran 2.0× DuckDB instead of 1.24×;
//! - glibc left free kept 6.6 GB after a burst of 32 clients (it raises its threshold
//!   after a large free, and gives pages inside an arena back only on `malloc_trim`).
//!
//! `muzzy_decay_ms:0` makes a purge return pages at once (`MADV_DONTNEED`), so the
//! resident size an operator sees falls with it; `MADV_FREE`'s lazily freed pages would
//! stay counted until the kernel is short of memory.
//!
//! [`release_when_idle`] also purges every arena when statements have ended and none
//! runs, so that a server that went idle gives its memory back within seconds rather
//! than after the decay.
//!
//! The only unsafe code of the crate is here: the allocator's configuration symbol and
//! one `mallctl` call that writes nothing.

#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use crate::server::activity::Connections;

#[cfg(all(target_os = "linux", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc's options, read by jemalloc when it starts (the `malloc_conf` symbol, under
/// the `_rjem_` prefix of tikv-jemalloc-sys): purging in background threads, freed
/// pages back to the system after a second, and returned at once (no `MADV_FREE`).
#[cfg(all(target_os = "linux", not(feature = "mimalloc")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

/// Which allocator the process runs on (reported at start and in `docs/performance.md`).
pub const ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(target_os = "linux") {
    "jemalloc"
} else {
    "system"
};

/// How often [`release_when_idle`] looks whether the server went idle.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// Give the pages the allocator holds free back to the system; whether it did.
pub fn release_freed() -> bool {
    #[cfg(all(target_os = "linux", not(feature = "mimalloc")))]
    {
        // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena's unused dirty pages go back.
        let name = b"arena.4096.purge\0";
        // SAFETY: the name is NUL-terminated; this control reads and writes nothing
        // (all four pointers null, as jemalloc's manual prescribes for `purge`).
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        rc == 0
    }
    #[cfg(feature = "mimalloc")]
    {
        // SAFETY: mi_collect takes a flag and no pointers.
        unsafe { libmimalloc_sys::mi_collect(true) };
        true
    }
    #[cfg(not(any(target_os = "linux", feature = "mimalloc")))]
    {
        false
    }
}

/// Run [`release_freed`] each time statements have ended since the last call and
/// none runs now (checked every 2 s). Runs until the runtime stops.
pub fn release_when_idle(connections: Arc<Connections>) {
    tokio::spawn(async move {
        let mut released_at = connections.finished_statements();
        let mut tick = tokio::time::interval(IDLE_CHECK);
        loop {
            tick.tick().await;
            let finished = connections.finished_statements();
            if finished == released_at || connections.running_statements() > 0 {
                continue;
            }
            released_at = finished;
            match tokio::task::spawn_blocking(release_freed).await {
                Ok(released) => {
                    crate::telemetry::global().memory_released();
                    tracing::debug!(released, "idle: freed memory given back");
                }
                Err(e) => tracing::warn!(error = %e, "giving freed memory back failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_purges_on_request() {
        // A megabyte freed, then every arena purged: the control exists and answers.
        drop(vec![1u8; 1 << 20]);
        assert!(super::release_freed() || super::ALLOCATOR == "system");
    }
}
