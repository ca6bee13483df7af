//! The scheduling slice of the supervisor's threads: each asks the kernel for the shortest
//! slice it grants a normal task (`sched_attr.sched_runtime`, 100 µs; EEVDF, Linux 6.12+).
//!
//! Why: while a supervisor thread runs a handshake, the program's thread is asleep in its
//! `connect` waiting for it, and each of the thread's turns is a burst of a few µs (an ioctl,
//! a send, a recv). With the default slice (~0.7 ms × (1 + log2 CPUs)) a woken thread queues
//! behind whatever else became runnable on that CPU (the proxy's own processes, the program's
//! other threads); a shorter slice gives it an earlier virtual deadline, so it runs when woken.
//! Its share of the CPU does not change (that is its weight, i.e. nice): only the latency.
//! Measured by hand on csbench's SUP workload, old launcher against new in alternating runs:
//! the supervisor's cost above the floor went from about +17–26 µs to about +7–11 µs per
//! connect on a 2-CPU VM.
//!
//! Owns: the `sched_getattr`/`sched_setattr` pair on the calling thread.
//! Must never: change the thread's policy, nice value or priority (it writes back what it read,
//! with only the slice changed), touch any process of the program, or fail the launch: a kernel
//! without custom slices ignores the field, one without `sched_setattr` says ENOSYS, and either
//! way the thread runs as before.

use super::filter::errno;

/// The slice asked for: the kernel clamps requests to 0.1–100 ms, so this is its shortest.
pub const SLICE_NS: u64 = 100_000;

/// `struct sched_attr` as of its first size (SCHED_ATTR_SIZE_VER0, 48 bytes): all we read and
/// write (the utilization clamps after it are left alone).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;

/// Asks for [`SLICE_NS`] on the calling thread when it runs a normal policy (SCHED_OTHER or
/// SCHED_BATCH: a real-time or idle policy chosen by whoever started the launcher is kept as
/// it is). Returns the slice the kernel reports afterwards (0 when it reports none, i.e. it
/// predates custom slices), or the errno of a call that failed.
pub fn shorten() -> Result<u64, i32> {
    let a = getattr()?;
    if a.policy != SCHED_OTHER && a.policy != SCHED_BATCH {
        return Ok(a.runtime);
    }
    let want = SchedAttr {
        size: SIZE,
        policy: a.policy,
        // Only reset-on-fork is carried over: a utilization-clamp flag would need the larger
        // struct, and we set no clamp.
        flags: a.flags & SCHED_FLAG_RESET_ON_FORK,
        nice: a.nice,
        priority: 0,
        runtime: SLICE_NS,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr on this thread with a fully initialized struct of SIZE bytes.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &want as *const SchedAttr, 0) } != 0 {
        return Err(errno());
    }
    Ok(getattr().map_or(0, |now| now.runtime))
}

const SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

/// The calling thread's attributes.
fn getattr() -> Result<SchedAttr, i32> {
    let mut a = SchedAttr::default();
    // SAFETY: sched_getattr on this thread (pid 0) into a zeroed struct of SIZE bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut a as *mut SchedAttr,
            SIZE,
            0,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_policy_and_nice_and_reports_the_slice() {
        // On a thread of its own: the slice stays with the thread that asked.
        std::thread::spawn(|| {
            // One step nicer than now (raising nice needs no privilege), so that the test
            // sees whether shorten() writes back the nice value it read.
            let before = getattr().expect("sched_getattr").nice;
            let nice = (before + 1).min(19);
            // SAFETY: setpriority on this thread's id.
            let tid = unsafe { libc::gettid() };
            assert_eq!(
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as u32, nice) },
                0
            );
            let got = shorten().expect("sched_setattr");
            // Linux 6.12+ reports the slice it now uses; older kernels report none.
            assert!(got == SLICE_NS || got == 0, "slice {got}");
            let a = getattr().expect("sched_getattr");
            assert_eq!(a.policy, SCHED_OTHER);
            assert_eq!(a.nice, nice, "nice changed");
        })
        .join()
        .unwrap();
    }
}
