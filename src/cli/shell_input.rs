//! Where the interactive shell's lines come from. On a terminal: a line editor (rustyline)
//! with history kept beside the session file, on a thread of its own since it blocks;
//! passwords are read there too, with echo off and never into the history. Otherwise
//! (a script, a pipe, a test): plain lines from standard input.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::mpsc;

use super::password::EchoOff;

/// What the editor thread is asked for.
enum Ask {
    Line(String),
    Secret(String),
}

pub struct ShellInput(Source);

enum Source {
    Plain(Lines<BufReader<Stdin>>),
    Edited {
        asks: std::sync::mpsc::Sender<Ask>,
        answers: mpsc::UnboundedReceiver<Option<String>>,
        /// A line was asked for and not received yet (the wait for it was interrupted by a
        /// notification): the next call waits for that one instead of asking again.
        waiting: bool,
    },
}

impl ShellInput {
    /// The editor on a terminal (history in `history`), plain lines otherwise.
    pub fn new(history: Option<PathBuf>) -> ShellInput {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return ShellInput::plain();
        }
        let Ok(mut editor) = DefaultEditor::new() else {
            return ShellInput::plain();
        };
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        let (asks, asked) = std::sync::mpsc::channel::<Ask>();
        let (answer, answers) = mpsc::unbounded_channel();
        let spawned = std::thread::Builder::new()
            .name("understudy-shell-input".to_string())
            .spawn(move || {
                while let Ok(ask) = asked.recv() {
                    let line = match ask {
                        Ask::Line(prompt) => match editor.readline(&prompt) {
                            Ok(line) => {
                                if let Some(entry) = history_entry(&line) {
                                    let _ = editor.add_history_entry(entry);
                                    if let Some(path) = &history {
                                        let _ = editor.save_history(path);
                                    }
                                }
                                Some(line)
                            }
                            Err(ReadlineError::Interrupted | ReadlineError::Eof) => None,
                            Err(_) => None,
                        },
                        Ask::Secret(prompt) => read_secret(&prompt),
                    };
                    if answer.send(line).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => ShellInput(Source::Edited {
                asks,
                answers,
                waiting: false,
            }),
            Err(_) => ShellInput::plain(),
        }
    }

    fn plain() -> ShellInput {
        ShellInput(Source::Plain(BufReader::new(tokio::io::stdin()).lines()))
    }

    /// Whether lines come without an editor (which prints its own prompts).
    pub fn is_plain(&self) -> bool {
        matches!(self.0, Source::Plain(_))
    }

    /// The next line (`None` at the end of input, or Ctrl-C / Ctrl-D in the editor).
    /// Cancel-safe: a line asked for and not received is the next call's answer.
    pub async fn line(&mut self, prompt: &str) -> std::io::Result<Option<String>> {
        match &mut self.0 {
            Source::Plain(lines) => lines.next_line().await,
            Source::Edited {
                asks,
                answers,
                waiting,
            } => {
                if !*waiting {
                    if asks.send(Ask::Line(prompt.to_string())).is_err() {
                        return Ok(None);
                    }
                    *waiting = true;
                }
                let line = answers.recv().await.flatten();
                *waiting = false;
                Ok(line)
            }
        }
    }

    /// A password: with echo off, and never in the history.
    pub async fn secret(&mut self, prompt: &str) -> std::io::Result<Option<String>> {
        match &mut self.0 {
            Source::Plain(lines) => {
                let echo = EchoOff::new();
                let line = lines.next_line().await;
                drop(echo);
                line
            }
            Source::Edited { asks, answers, .. } => {
                if asks.send(Ask::Secret(prompt.to_string())).is_err() {
                    return Ok(None);
                }
                Ok(answers.recv().await.flatten())
            }
        }
    }
}

/// What of a line goes into the history: the line, except that a password typed after
/// `login USER` or `register USER` is left out.
fn history_entry(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => None,
        [command @ ("login" | "register"), user, ..] => Some(format!("{command} {user}")),
        _ => Some(line.trim().to_string()),
    }
}

fn read_secret(prompt: &str) -> Option<String> {
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    let echo = EchoOff::new();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo);
    println!();
    match read {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security: a password typed on a login or register line never reaches the history
    /// file; everything else is kept as typed.
    #[test]
    fn passwords_stay_out_of_the_history() {
        assert_eq!(
            history_entry("login alice s3cret"),
            Some("login alice".to_string())
        );
        assert_eq!(
            history_entry("register bob hunter2 x"),
            Some("register bob".to_string())
        );
        assert_eq!(
            history_entry("send hello there"),
            Some("send hello there".to_string())
        );
        assert_eq!(history_entry("   "), None);
    }
}
