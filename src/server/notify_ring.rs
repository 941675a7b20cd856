//! Telling many clients of a new primary through io_uring (Linux). Telling a client is one
//! short HTTP exchange on a fresh TCP connection, and nearly all its cost is the kernel's TCP
//! work; on tokio sockets the rest is a file descriptor, an epoll registration and about ten
//! system calls per client. Here one thread drives a ring with a fixed number of calls in
//! flight, each on a direct descriptor (a slot in the ring's own file table): socket,
//! connect, send, receive and close are submissions, and one `io_uring_enter` submits and
//! reaps the steps of many calls at once. Where no ring can be had (an old kernel, a seccomp
//! filter that forbids io_uring), [`Ring::new`] says so and the caller uses tokio sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, squeue, types};
use socket2::SockAddr;

use super::notify::{Outcome, STATUS_LINE, judge_status, write_request};
use crate::uring;

/// How often calls past their deadline are looked for (and the longest wait in the kernel).
const DEADLINE_CHECK: Duration = Duration::from_millis(10);
/// The `user_data` of a cancellation: its own completion carries nothing to act on.
const CANCELLATION: u64 = u64::MAX;

/// A thread that owns a ring and runs the jobs sent to it, one after another. It ends when
/// every handle to it is gone, or when its ring fails.
#[derive(Clone)]
pub(super) struct RingThread(mpsc::Sender<Job>);

/// Work for the ring's thread.
pub(super) type Job = Box<dyn FnOnce(&mut Ring) + Send>;

impl RingThread {
    /// Starts the thread with a ring for `width` calls at once, or says why there can be
    /// none. The ring is made on its thread because only that thread may submit to it.
    pub(super) fn start(width: usize) -> io::Result<RingThread> {
        let (jobs, queued) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("notify".to_string())
            .spawn(move || {
                let mut ring = match Ring::new(width) {
                    Ok(ring) => ring,
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                while let Ok(job) = queued.recv() {
                    job(&mut ring);
                    if ring.failed {
                        return;
                    }
                }
            })?;
        started
            .recv()
            .map_err(|_| io::Error::other("the ring's thread ended at its start"))??;
        Ok(RingThread(jobs))
    }

    /// Runs `job` on the ring's thread, or gives it back if the thread has ended.
    pub(super) fn run(&self, job: Job) -> Result<(), Job> {
        self.0.send(job).map_err(|unsent| unsent.0)
    }
}

/// A ring with room for a fixed number of calls at once.
pub(super) struct Ring {
    ring: IoUring,
    /// One per direct descriptor slot. Allocated once and never resized: the kernel holds
    /// pointers into a call's buffers while its step is in flight.
    calls: Vec<Call>,
    /// Calls started and not yet closed.
    busy: usize,
    completions: Vec<(u64, i32)>,
    /// The kernel refused the ring something: it is given up.
    failed: bool,
}

/// One client's call, in the slot it occupies.
struct Call {
    address: String,
    peer: SockAddr,
    request: Vec<u8>,
    sent: usize,
    status: [u8; STATUS_LINE],
    received: usize,
    step: Step,
    deadline: Instant,
    timed_out: bool,
    outcome: Outcome,
}

/// The step a call has in flight. A completion's `user_data` is its slot and step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Open = 1,
    Connect = 2,
    Send = 3,
    Receive = 4,
    Close = 5,
}

impl Step {
    fn from_code(code: u64) -> Option<Step> {
        [
            Step::Open,
            Step::Connect,
            Step::Send,
            Step::Receive,
            Step::Close,
        ]
        .into_iter()
        .find(|step| *step as u64 == code)
    }
}

fn user_data(slot: usize, step: Step) -> u64 {
    ((slot as u64) << 8) | step as u64
}

impl Ring {
    /// A ring for `width` calls at once, or why this kernel (or its sandbox) offers none.
    pub(super) fn new(width: usize) -> io::Result<Ring> {
        let width = width.max(1);
        let slots = u32::try_from(width).map_err(|_| io::ErrorKind::InvalidInput)?;
        // Each call has at most one step in flight, plus cancellations of overdue ones.
        let entries = (2 * slots).next_power_of_two();
        let ring = uring::single_thread_ring(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let needed = [
            opcode::Socket::CODE,
            opcode::Connect::CODE,
            opcode::Send::CODE,
            opcode::Recv::CODE,
            opcode::Close::CODE,
            opcode::AsyncCancel::CODE,
        ];
        if !needed.iter().all(|code| probe.is_supported(*code)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring lacks socket operations",
            ));
        }
        ring.submitter().register_files_sparse(slots)?;
        let unused = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        let calls = (0..width)
            .map(|_| Call {
                address: String::new(),
                peer: unused.clone(),
                request: Vec::new(),
                sent: 0,
                status: [0; STATUS_LINE],
                received: 0,
                step: Step::Close,
                deadline: Instant::now(),
                timed_out: false,
                outcome: Ok(()),
            })
            .collect();
        Ok(Ring {
            ring,
            calls,
            busy: 0,
            completions: Vec::with_capacity(entries as usize * 2),
            failed: false,
        })
    }

    /// Tells every client `next` yields, `width` at a time, each within `timeout`, sending
    /// `body` as the notice; `done` hears each client's outcome. An error is the ring's own
    /// failure: the clients not yet told stay untold.
    pub(super) fn tell(
        &mut self,
        next: impl FnMut() -> Option<String>,
        body: &[u8],
        timeout: Duration,
        done: impl FnMut(String, Outcome),
    ) -> io::Result<()> {
        let told = self.tell_all(next, body, timeout, done);
        self.failed = told.is_err();
        told
    }

    fn tell_all(
        &mut self,
        mut next: impl FnMut() -> Option<String>,
        body: &[u8],
        timeout: Duration,
        mut done: impl FnMut(String, Outcome),
    ) -> io::Result<()> {
        for slot in 0..self.calls.len() {
            self.start_next(slot, &mut next, body, timeout, &mut done)?;
        }
        let mut checked = Instant::now();
        while self.busy > 0 {
            uring::submit_and_wait(&mut self.ring, DEADLINE_CHECK)?;
            self.completions.clear();
            self.completions.extend(
                self.ring
                    .completion()
                    .map(|entry| (entry.user_data(), entry.result())),
            );
            for index in 0..self.completions.len() {
                let (data, result) = self.completions[index];
                if data == CANCELLATION {
                    continue;
                }
                let slot = (data >> 8) as usize;
                let Some(step) = Step::from_code(data & 0xff) else {
                    continue;
                };
                if slot >= self.calls.len() || self.calls[slot].step != step {
                    continue;
                }
                if self.advance(slot, step, result)? {
                    self.finish(slot, &mut done);
                    self.start_next(slot, &mut next, body, timeout, &mut done)?;
                }
            }
            if checked.elapsed() >= DEADLINE_CHECK {
                checked = Instant::now();
                self.cancel_overdue(checked)?;
            }
        }
        Ok(())
    }

    /// Starts a call in the free `slot` to the next client with a usable address, if any is
    /// left. (A client without one is reported at once and does not leave the slot idle.)
    fn start_next(
        &mut self,
        slot: usize,
        next: &mut impl FnMut() -> Option<String>,
        body: &[u8],
        timeout: Duration,
        done: &mut impl FnMut(String, Outcome),
    ) -> io::Result<()> {
        while let Some(address) = next() {
            match address.parse::<SocketAddr>() {
                Ok(peer) => return self.start(slot, address, peer, body, timeout),
                Err(_) => done(address, Err("not an IP address and port".to_string())),
            }
        }
        Ok(())
    }

    /// Starts the call to `address` (at `peer`) in the free `slot`.
    fn start(
        &mut self,
        slot: usize,
        address: String,
        peer: SocketAddr,
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<()> {
        let call = &mut self.calls[slot];
        call.peer = SockAddr::from(peer);
        write_request(&mut call.request, &address, body);
        call.address = address;
        call.sent = 0;
        call.received = 0;
        call.deadline = Instant::now() + timeout;
        call.timed_out = false;
        call.outcome = Ok(());
        let domain = if peer.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let target = types::DestinationSlot::try_from_slot_target(slot as u32)
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        let open = opcode::Socket::new(domain, libc::SOCK_STREAM, 0)
            .file_index(Some(target))
            .build();
        self.busy += 1;
        self.push(slot, Step::Open, open)
    }

    /// Takes a step's completion and queues the call's next step; true once the call is over
    /// (closed, or never opened).
    fn advance(&mut self, slot: usize, step: Step, result: i32) -> io::Result<bool> {
        let call = &mut self.calls[slot];
        if result < 0 && step != Step::Close {
            call.outcome = Err(if call.timed_out {
                "timed out".to_string()
            } else {
                io::Error::from_raw_os_error(-result).to_string()
            });
            // A socket that was never made needs no closing.
            return if step == Step::Open {
                Ok(true)
            } else {
                self.close(slot).map(|()| false)
            };
        }
        let done = result as usize;
        match step {
            Step::Open => self.connect(slot),
            Step::Connect => self.send_rest(slot),
            Step::Send => {
                call.sent += done;
                self.send_rest(slot)
            }
            Step::Receive if done == 0 => {
                call.outcome = Err("closed before answering".to_string());
                self.close(slot)
            }
            Step::Receive => {
                call.received += done;
                if call.received < STATUS_LINE {
                    self.receive(slot)
                } else {
                    call.outcome = judge_status(&call.status);
                    self.close(slot)
                }
            }
            // Closing fails only for a slot already empty: the call is over either way.
            Step::Close => return Ok(true),
        }
        .map(|()| false)
    }

    fn connect(&mut self, slot: usize) -> io::Result<()> {
        let peer = &self.calls[slot].peer;
        let entry =
            opcode::Connect::new(types::Fixed(slot as u32), peer.as_ptr().cast(), peer.len())
                .build();
        self.push(slot, Step::Connect, entry)
    }

    /// Sends what is left of the request, or once it is all sent, reads the answer.
    fn send_rest(&mut self, slot: usize) -> io::Result<()> {
        let call = &self.calls[slot];
        let rest = &call.request[call.sent..];
        if rest.is_empty() {
            return self.receive(slot);
        }
        let length = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fixed(slot as u32), rest.as_ptr(), length)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(slot, Step::Send, entry)
    }

    fn receive(&mut self, slot: usize) -> io::Result<()> {
        let call = &mut self.calls[slot];
        let rest = &mut call.status[call.received..];
        let entry = opcode::Recv::new(
            types::Fixed(slot as u32),
            rest.as_mut_ptr(),
            rest.len() as u32,
        )
        .build();
        self.push(slot, Step::Receive, entry)
    }

    fn close(&mut self, slot: usize) -> io::Result<()> {
        let entry = opcode::Close::new(types::Fixed(slot as u32)).build();
        self.push(slot, Step::Close, entry)
    }

    /// Reports a finished call and frees its slot.
    fn finish(&mut self, slot: usize, done: &mut impl FnMut(String, Outcome)) {
        let call = &mut self.calls[slot];
        self.busy -= 1;
        let outcome = std::mem::replace(&mut call.outcome, Ok(()));
        done(std::mem::take(&mut call.address), outcome);
    }

    /// Cancels the step in flight of every call past its deadline; the step then fails with
    /// `ECANCELED` and the call closes. (A call that moved on before the cancellation
    /// arrived is cancelled again at the next check.)
    fn cancel_overdue(&mut self, now: Instant) -> io::Result<()> {
        for slot in 0..self.calls.len() {
            let call = &mut self.calls[slot];
            let cancellable = matches!(call.step, Step::Connect | Step::Send | Step::Receive);
            if cancellable && now >= call.deadline && !call.address.is_empty() {
                call.timed_out = true;
                let entry = opcode::AsyncCancel::new(user_data(slot, call.step))
                    .build()
                    .user_data(CANCELLATION);
                self.enqueue(entry)?;
            }
        }
        Ok(())
    }

    /// Queues `slot`'s next step.
    fn push(&mut self, slot: usize, step: Step, entry: squeue::Entry) -> io::Result<()> {
        self.calls[slot].step = step;
        self.enqueue(entry.user_data(user_data(slot, step)))
    }

    fn enqueue(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every pointer in an entry points into `self.calls[slot]` of the call the
        // entry belongs to (its address, request or status buffer). `calls` is never resized,
        // and a slot's buffers are not touched again until its step completes; the last step
        // of every call is a close, and `Drop` leaks `calls` if the ring goes away with steps
        // in flight.
        unsafe { uring::push(&mut self.ring, &entry) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.busy > 0 {
            // The kernel may still write into these buffers: better leaked than freed.
            std::mem::forget(std::mem::take(&mut self.calls));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::notify::tests::listener;
    use std::sync::{Arc, Mutex};

    /// Tells `addresses` through a ring `width` calls wide, on a thread of its own as the
    /// notifier does; `None` where this kernel offers no ring.
    async fn tell(
        addresses: Vec<String>,
        width: usize,
        timeout: Duration,
    ) -> Option<Vec<(String, Outcome)>> {
        tokio::task::spawn_blocking(move || {
            let mut ring = match Ring::new(width) {
                Ok(ring) => ring,
                Err(err) => {
                    eprintln!("skipped: no io_uring here ({err})");
                    return None;
                }
            };
            let mut queue = addresses.into_iter();
            let mut outcomes = Vec::new();
            ring.tell(
                || queue.next(),
                br#"{"primary":"127.0.0.1:1","term":7}"#,
                timeout,
                |address, outcome| outcomes.push((address, outcome)),
            )
            .expect("the ring works");
            Some(outcomes)
        })
        .await
        .expect("the ring's thread")
    }

    /// More clients than calls in flight: every one is told once, with the whole notice,
    /// and slots are reused as calls finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_client_is_told_once_with_the_whole_notice() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let mut addresses = Vec::new();
        for _ in 0..40 {
            addresses.push(listener(Some("200 OK"), heard.clone()).await);
        }
        let Some(outcomes) = tell(addresses.clone(), 8, Duration::from_secs(5)).await else {
            return;
        };
        assert_eq!(outcomes.len(), 40);
        assert!(
            outcomes.iter().all(|(_, outcome)| outcome.is_ok()),
            "{outcomes:?}"
        );
        let mut told: Vec<&String> = outcomes.iter().map(|(address, _)| address).collect();
        told.sort();
        let mut expected: Vec<&String> = addresses.iter().collect();
        expected.sort();
        assert_eq!(told, expected);
        let heard = heard.lock().expect("lock");
        assert_eq!(heard.len(), 40);
        for request in heard.iter() {
            assert!(
                request.starts_with("POST /new-primary HTTP/1.1\r\n"),
                "{request}"
            );
            assert!(
                request.ends_with(r#"{"primary":"127.0.0.1:1","term":7}"#),
                "{request}"
            );
        }
    }

    /// A client that refuses, refuses the notice, never answers, or has no usable address
    /// is reported as not told, with why, and does not hold up the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_failure_is_reported_with_its_cause() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let told = listener(Some("200 OK"), heard.clone()).await;
        let refusing = listener(Some("503 Service Unavailable"), heard.clone()).await;
        let silent = listener(None, heard.clone()).await;
        let closed = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            socket.local_addr().expect("address").to_string()
        };
        let addresses = vec![
            told.clone(),
            refusing.clone(),
            silent.clone(),
            closed.clone(),
            "nowhere".to_string(),
        ];
        let Some(outcomes) = tell(addresses, 4, Duration::from_millis(300)).await else {
            return;
        };
        let outcome = |address: &str| {
            outcomes
                .iter()
                .find(|(a, _)| a == address)
                .map(|(_, outcome)| outcome.clone())
                .expect("an outcome for every client")
        };
        assert_eq!(outcomes.len(), 5);
        assert_eq!(outcome(&told), Ok(()));
        assert_eq!(outcome(&refusing), Err("answered HTTP/1.1 503".to_string()));
        assert_eq!(outcome(&silent), Err("timed out".to_string()));
        let refused = outcome(&closed).expect_err("nobody listens there");
        assert!(refused.contains("refused"), "{refused}");
        assert!(outcome("nowhere").is_err());
    }

    /// A client whose address is unusable is reported without taking a slot's turn: the
    /// clients after it are still told, even with a single call in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unusable_address_does_not_idle_a_slot() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let first = listener(Some("200 OK"), heard.clone()).await;
        let second = listener(Some("200 OK"), heard.clone()).await;
        let addresses = vec![
            "nowhere".to_string(),
            first.clone(),
            "nowhere either".to_string(),
            second.clone(),
        ];
        let Some(outcomes) = tell(addresses, 1, Duration::from_secs(5)).await else {
            return;
        };
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        let told: Vec<&String> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(address, _)| address)
            .collect();
        assert_eq!(told, vec![&first, &second]);
        assert_eq!(heard.lock().expect("lock").len(), 2);
    }
}
