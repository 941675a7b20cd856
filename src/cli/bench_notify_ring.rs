//! `bench notify`'s listeners served through io_uring, on Linux. They stand in for clients
//! on other machines, yet here they share the servers' cores, so what they cost beyond the
//! kernel's TCP work is the bench's, not the system's: one thread and one ring serve every
//! listening socket, with a standing multishot accept on each, and each connection is a
//! receive, an answer and a close submitted without readiness polling. On the wire they
//! behave as the tokio ones do.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use understudy::uring;

use super::bench_notify::{ANSWER, Heard, notice_in};

/// What a completion is for, in the top bits of its `user_data`; the rest is an index.
const ACCEPT: u64 = 0;
const RECEIVE: u64 = 1 << 62;
const ANSWERED: u64 = 2 << 62;
const CLOSED: u64 = 3 << 62;
const TAG: u64 = 3 << 62;
/// How often the stop flag is looked at.
const STOP_CHECK: Duration = Duration::from_millis(20);
/// Room for one request: a notice is a few hundred bytes.
const REQUEST_ROOM: usize = 4096;

/// An accepted connection: its descriptor and what it has sent so far.
struct Connection {
    fd: i32,
    /// Boxed so that it stays where the kernel writes while `connections` grows.
    buffer: Box<[u8; REQUEST_ROOM]>,
    received: usize,
}

/// Every listener, served on one ring.
pub(super) struct RingListeners {
    ring: IoUring,
    listeners: Vec<TcpListener>,
    connections: Vec<Connection>,
    free: Vec<usize>,
    heard: Arc<Heard>,
}

impl RingListeners {
    /// A ring to serve listeners on, or why this kernel offers none.
    pub(super) fn new(heard: Arc<Heard>) -> io::Result<Self> {
        let ring = uring::single_thread_ring(4096)?;
        Ok(RingListeners {
            ring,
            listeners: Vec::new(),
            connections: Vec::new(),
            free: Vec::new(),
            heard,
        })
    }

    /// Serves `listeners` until `stop` is set. Must run on the thread that made the ring.
    pub(super) fn serve(
        mut self,
        listeners: Vec<TcpListener>,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        self.listeners = listeners;
        for index in 0..self.listeners.len() {
            self.accept(index)?;
        }
        let mut completions = Vec::new();
        while !stop.load(Ordering::Acquire) {
            uring::submit_and_wait(&mut self.ring, STOP_CHECK)?;
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|entry| (entry.user_data(), entry.result(), entry.flags())),
            );
            for &(data, result, flags) in &completions {
                let index = (data & !TAG) as usize;
                match data & TAG {
                    ACCEPT => self.accepted(index, result, flags)?,
                    RECEIVE => self.received(index, result)?,
                    ANSWERED => self.close(index)?,
                    _ => self.free.push(index),
                }
            }
        }
        // Receives may still be in flight into these buffers: leave them to the exit.
        std::mem::forget(self.connections);
        Ok(())
    }

    fn accept(&mut self, listener: usize) -> io::Result<()> {
        let fd = types::Fd(self.listeners[listener].as_raw_fd());
        let entry = opcode::AcceptMulti::new(fd).build();
        self.push(entry.user_data(ACCEPT | listener as u64))
    }

    fn accepted(&mut self, listener: usize, result: i32, flags: u32) -> io::Result<()> {
        if !cqueue::more(flags) {
            // The standing accept ended (it may, on an error): stand it up again.
            self.accept(listener)?;
        }
        if result < 0 {
            return Ok(());
        }
        let index = match self.free.pop() {
            Some(index) => {
                self.connections[index].fd = result;
                self.connections[index].received = 0;
                index
            }
            None => {
                self.connections.push(Connection {
                    fd: result,
                    buffer: Box::new([0; REQUEST_ROOM]),
                    received: 0,
                });
                self.connections.len() - 1
            }
        };
        self.receive(index)
    }

    fn receive(&mut self, index: usize) -> io::Result<()> {
        let connection = &mut self.connections[index];
        let rest = &mut connection.buffer[connection.received..];
        let entry = opcode::Recv::new(
            types::Fd(connection.fd),
            rest.as_mut_ptr(),
            rest.len() as u32,
        )
        .build();
        self.push(entry.user_data(RECEIVE | index as u64))
    }

    fn received(&mut self, index: usize, result: i32) -> io::Result<()> {
        let connection = &mut self.connections[index];
        if result <= 0 || connection.received + result as usize >= REQUEST_ROOM {
            return self.close(index);
        }
        connection.received += result as usize;
        let Some(notice) = notice_in(&connection.buffer[..connection.received]) else {
            return self.receive(index);
        };
        if let Some(notice) = notice {
            self.heard.record(Instant::now(), &notice.primary);
        }
        let entry = opcode::Send::new(
            types::Fd(self.connections[index].fd),
            ANSWER.as_ptr(),
            ANSWER.len() as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build();
        self.push(entry.user_data(ANSWERED | index as u64))
    }

    fn close(&mut self, index: usize) -> io::Result<()> {
        let entry = opcode::Close::new(types::Fd(self.connections[index].fd)).build();
        self.push(entry.user_data(CLOSED | index as u64))
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: an entry points into a connection's boxed buffer, which neither moves nor is
        // reused until its receive completes (and is leaked at the end), or into the static
        // answer.
        unsafe { uring::push(&mut self.ring, &entry) }
    }
}
