//! The io_uring plumbing that the client notifier (`server::notify_ring`) and `bench notify`'s
//! listeners share (Linux): making a ring that one thread drives, queueing an entry, and
//! waiting for completions with a bound.

use std::io;
use std::time::Duration;

use io_uring::{IoUring, squeue, types};

/// A ring of `entries` for one thread, which alone submits and reaps: the kernel then runs
/// completion work only when that thread asks for completions, in batches (Linux 6.1).
/// Older kernels get a plain ring.
pub fn single_thread_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))
}

/// Queues `entry`, submitting what is queued first if the submission queue is full.
///
/// # Safety
/// Every buffer `entry` points to must stay valid, and unmoved, until its completion is reaped.
pub unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: the caller keeps the entry's buffers valid until it completes.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// Submits what is queued and waits for at least one completion, or for `wait` to pass, or
/// for a signal: each is a normal end of the wait.
pub fn submit_and_wait(ring: &mut IoUring, wait: Duration) -> io::Result<()> {
    let wait = types::Timespec::from(wait);
    let args = types::SubmitArgs::new().timespec(&wait);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}
