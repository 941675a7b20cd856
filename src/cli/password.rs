//! Reading a password for `understudy client`: from the flag, the environment, or a line on
//! stdin with echo turned off on a terminal.

use std::io::IsTerminal;

use anyhow::{Context, bail};

/// Reads the password from standard input (the flag and the environment variable were
/// handled by clap). On a terminal it prompts and turns echo off.
pub fn read_password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(password) = given {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
    }
    let echo = EchoOff::new();
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .context("cannot read the password")?;
    drop(echo);
    if stdin.is_terminal() {
        eprintln!();
    }
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password given: use --password, UNDERSTUDY_PASSWORD or standard input");
    }
    Ok(password)
}

/// Turns terminal echo off while a password is typed, and back on when dropped. Uses
/// `stty` so no terminal crate is needed; where that fails, the password simply echoes.
pub struct EchoOff(bool);

impl EchoOff {
    pub fn new() -> EchoOff {
        EchoOff(std::io::stdin().is_terminal() && stty("-echo"))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.0 {
            stty("echo");
        }
    }
}

fn stty(setting: &str) -> bool {
    std::process::Command::new("stty")
        .arg(setting)
        .stdin(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|status| status.success())
}
