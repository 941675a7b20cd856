//! The stdout printer: a thread of its own that writes the lines of applied messages, so a
//! slow reader of our stdout can never stall the driver.
//!
//! The driver adds the lines of each round to a shared buffer; the printer writes what has
//! gathered with one `write`. Under load a round applies dozens of messages, and a `write`
//! per line (what `println!` does on a line-buffered stdout) was measured at three system
//! calls per acknowledged write across a cluster of three. The printer is woken only by the
//! first lines after it last wrote, and then lets lines gather for [`GATHER`] before it
//! writes: thousands of rounds a second then cost at most a hundred wake-ups and writes,
//! and a line appears at most that much later.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long the printer lets lines gather once woken.
const GATHER: Duration = Duration::from_millis(10);

/// The driver's side: lines gathered during a round, added to the shared buffer at its end.
pub struct Printer {
    round: String,
    gathered: Arc<Mutex<String>>,
    wake: mpsc::UnboundedSender<()>,
}

impl Printer {
    /// Starts the printing thread.
    pub fn spawn() -> std::io::Result<Printer> {
        let (wake, mut woken) = mpsc::unbounded_channel::<()>();
        let gathered = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&gathered);
        std::thread::Builder::new()
            .name("understudy-stdout".to_string())
            .spawn(move || {
                while woken.blocking_recv().is_some() {
                    std::thread::sleep(GATHER);
                    // Wake-ups sent before the buffer is taken are for lines taken with
                    // it; one sent after it finds the buffer empty and is kept.
                    while woken.try_recv().is_ok() {}
                    write_gathered(&shared);
                }
            })?;
        Ok(Printer {
            round: String::new(),
            gathered,
            wake,
        })
    }

    /// Adds `[server] user: text` to this round's lines.
    pub fn line(&mut self, server: &str, username: &str, text: &str) {
        let _ = writeln!(self.round, "[{server}] {username}: {text}");
    }

    /// Adds this round's lines to what the printer will write, waking it if they are the
    /// first since it last wrote.
    pub fn end_round(&mut self) {
        if self.round.is_empty() {
            return;
        }
        let first = {
            let mut gathered = self.gathered.lock().unwrap_or_else(PoisonError::into_inner);
            let first = gathered.is_empty();
            gathered.push_str(&self.round);
            first
        };
        self.round.clear();
        if first {
            let _ = self.wake.send(());
        }
    }
}

impl Drop for Printer {
    /// At a clean stop, the lines still gathering are written here, not lost with the thread.
    fn drop(&mut self) {
        self.end_round();
        write_gathered(&self.gathered);
    }
}

/// Writes what has gathered, with one `write`. The buffer is taken under the stdout lock,
/// so that the lines written at a stop cannot overtake ones the thread took before them.
fn write_gathered(gathered: &Mutex<String>) {
    let mut out = std::io::stdout().lock();
    let text = std::mem::take(&mut *gathered.lock().unwrap_or_else(PoisonError::into_inner));
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
