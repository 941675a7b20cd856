//! The stdout printer: a thread of its own that writes the lines of applied messages, so a
//! slow reader of our stdout can never stall the driver.
//!
//! The driver gathers the lines of one round into one buffer and hands it over whole; the
//! printer writes whatever has queued with one `write`. Under load a round applies dozens of
//! messages, and a `write` per line (what `println!` does on a line-buffered stdout) was
//! measured at three system calls per acknowledged write across a cluster of three.

use std::fmt::Write as _;
use std::io::Write as _;

use tokio::sync::mpsc;

/// The driver's side: lines gathered during a round, sent once at its end.
pub struct Printer {
    round: String,
    tx: mpsc::UnboundedSender<String>,
}

impl Printer {
    /// Starts the printing thread.
    pub fn spawn() -> std::io::Result<Printer> {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        std::thread::Builder::new()
            .name("understudy-stdout".to_string())
            .spawn(move || {
                let stdout = std::io::stdout();
                while let Some(mut text) = rx.blocking_recv() {
                    while let Ok(more) = rx.try_recv() {
                        text.push_str(&more);
                    }
                    let mut out = stdout.lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            })?;
        Ok(Printer {
            round: String::new(),
            tx,
        })
    }

    /// Adds `[server] user: text` to this round's lines.
    pub fn line(&mut self, server: &str, username: &str, text: &str) {
        let _ = writeln!(self.round, "[{server}] {username}: {text}");
    }

    /// Hands this round's lines to the printing thread, if there are any.
    pub fn end_round(&mut self) {
        if !self.round.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.round));
        }
    }
}
