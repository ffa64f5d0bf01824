//! Process memory: glibc's allocator made to give the memory kpitables freed back to
//! the system.
//!
//! glibc keeps freed memory in its arenas for reuse. Two of its habits kept a server
//! that had served a burst of queries at nearly its peak resident size long after
//! (docs/reliability.md: 6.6 GB after 32 clients, 270 MB once trimmed):
//!
//! - after a large block is freed, glibc raises its mmap threshold to that block's
//!   size, so the Arrow buffers of later queries come from the heap instead of their
//!   own mappings, and a heap gives memory back only from its top;
//! - pages free inside an arena go back to the system only on `malloc_trim`.
//!
//! So [`tune_allocator`] fixes the thresholds at glibc's own initial values (which
//! stops the raising) unless `GLIBC_TUNABLES` sets them, and [`release_when_idle`]
//! calls `malloc_trim(0)` when statements have ended and none runs: a quiescent point,
//! since the call walks and locks every arena. Elsewhere (musl, macOS) both do
//! nothing: those allocators do not keep pages this way.
//!
//! The only unsafe code of the crate is here: two calls into glibc that take no
//! pointers.

#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use crate::activity::Connections;

/// glibc's initial mmap and trim thresholds (128 KiB), kept fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: i32 = 128 * 1024;

/// How often [`release_when_idle`] looks whether the server went idle.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// Fix glibc's mmap and trim thresholds, unless `GLIBC_TUNABLES` sets them. Call once,
/// at start, before the runtime's threads allocate.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if tunables.contains("glibc.malloc.mmap_threshold")
            || tunables.contains("glibc.malloc.trim_threshold")
        {
            return;
        }
        // SAFETY: mallopt takes two integers and no pointers; glibc serializes it with
        // every other allocator call.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        }
    }
}

/// Give the pages glibc holds free back to the system; whether any came back.
pub fn release_freed() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and only rearranges glibc's own free
        // lists, which it locks while it runs.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
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
                Ok(released) => tracing::debug!(released, "idle: freed memory given back"),
                Err(e) => tracing::warn!(error = %e, "giving freed memory back failed"),
            }
        }
    });
}
