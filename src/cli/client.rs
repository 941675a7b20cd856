//! `understudy client`: the client library on the command line.
//!
//! One-shot commands act as one client across invocations by keeping the session (client
//! id, token, next `seq`, last primary) in a state file: `login` creates a new client and
//! saves it, `send` loads it, sends with the next `seq` and saves it again. `shell` keeps one
//! client alive, so its notification listener hears `/new-primary` and says so.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use understudy::Error;
use understudy::client::{Client, ClientOptions, SavedSession, saved};

use super::client_output::{clients_table, messages_table, status_details};
use super::client_tls::ClientTlsArgs;
use super::cluster_status::ClusterStatus;
use super::password::read_password;
use super::shell_input::ShellInput;

/// Talk to a cluster as a client: register, log in, send and read messages.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// The servers to contact, HOST:PORT[,HOST:PORT...]; any of them will do. Defaults to
    /// the servers of the saved session.
    #[arg(long, env = "UNDERSTUDY_SERVERS", value_delimiter = ',', global = true)]
    servers: Vec<String>,

    /// Where the session (client id, token, next seq) is kept between commands
    /// [default: $HOME/.understudy/client.json].
    #[arg(long, env = "UNDERSTUDY_CLIENT_STATE", global = true)]
    state_file: Option<PathBuf>,

    /// Where the notification listener binds (port 0: any free port) [default: the local
    /// address this machine reaches the first server from, so that only that network
    /// sees it].
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,

    /// How long a command keeps looking for a primary before it gives up, in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    retry_ms: u64,

    /// The bound on one HTTP request, in milliseconds.
    #[arg(long, default_value_t = 3_000, global = true)]
    timeout_ms: u64,

    /// Print answers as JSON instead of text (errors too, as `{"error": ...}`).
    #[arg(long, global = true)]
    json: bool,

    #[command(flatten)]
    tls: ClientTlsArgs,

    #[command(subcommand)]
    command: ClientCommand,
}

// What `understudy client` does: one subcommand per call of the client library. (A plain
// comment: clap would take a doc comment as the help text of `understudy client`.)
#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Create a user.
    Register {
        username: String,
        /// The password; else $UNDERSTUDY_PASSWORD; else read from standard input.
        #[arg(long, env = "UNDERSTUDY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Start a new client session and log in; the session is saved for later commands.
    Login {
        username: String,
        /// The password; else $UNDERSTUDY_PASSWORD; else read from standard input.
        #[arg(long, env = "UNDERSTUDY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Send a message to the board (the words are joined with spaces).
    Send {
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
        message: Vec<String>,
    },
    /// List messages on the board.
    Messages {
        /// The first index to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many to show (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Show the state of one server, or a line for every server.
    Status {
        /// Ask only this server.
        #[arg(long)]
        server: Option<String>,
    },
    /// List the clients the cluster knows.
    Clients,
    /// Log out and forget the saved session.
    Logout,
    /// An interactive session that reports every change of primary.
    Shell,
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let json = args.json;
    let result = run_command(args).await;
    if json && let Err(err) = &result {
        println!("{}", serde_json::json!({ "error": format!("{err:#}") }));
    }
    result
}

async fn run_command(args: ClientArgs) -> anyhow::Result<()> {
    let state_file = match args.state_file.clone().or_else(saved::default_path) {
        Some(path) => path,
        None => bail!("no state file: pass --state-file or set HOME"),
    };
    let saved = SavedSession::load(&state_file)?;
    let servers = if args.servers.is_empty() {
        saved
            .as_ref()
            .map(|s| s.servers.clone())
            .unwrap_or_default()
    } else {
        args.servers.clone()
    };
    if servers.is_empty() {
        if matches!(
            args.command,
            ClientCommand::Send { .. } | ClientCommand::Logout
        ) {
            bail!(
                "not logged in: run `understudy client --servers HOST:PORT login USERNAME` first"
            );
        }
        bail!("no servers: pass --servers HOST:PORT[,HOST:PORT...]");
    }
    let cli = Cli {
        servers: servers.clone(),
        state_file,
        saved,
        options: ClientOptions {
            listen: args.listen.unwrap_or_else(|| listen_toward(&servers[0])),
            retry_for: Duration::from_millis(args.retry_ms),
            request_timeout: Duration::from_millis(args.timeout_ms),
            tls: args.tls.config()?,
            ..ClientOptions::default()
        },
        json: args.json,
    };
    match args.command {
        ClientCommand::Register { username, password } => {
            let password = read_password(password)?;
            cli.register(&username, &password).await
        }
        ClientCommand::Login { username, password } => {
            let password = read_password(password)?;
            cli.login(&username, &password).await
        }
        ClientCommand::Send { message } => cli.send(&message.join(" ")).await,
        ClientCommand::Messages { from, limit } => cli.messages(from, limit).await,
        ClientCommand::Status { server } => cli.status(server.as_deref()).await,
        ClientCommand::Clients => cli.clients().await,
        ClientCommand::Logout => cli.logout().await,
        ClientCommand::Shell => cli.shell().await,
    }
}

/// What every command needs: where to go, where the session lives, how to print.
struct Cli {
    servers: Vec<String>,
    state_file: PathBuf,
    saved: Option<SavedSession>,
    options: ClientOptions,
    json: bool,
}

impl Cli {
    /// A client for calls that need no login: the saved one (it knows the primary) if
    /// any, else one that never calls `client/init`.
    fn reader(&self) -> anyhow::Result<Client> {
        let mut options = self.options.clone();
        options.listen_on_resume = false;
        let mut servers = self.servers.clone();
        if let Some(primary) = self.saved.as_ref().and_then(|s| s.primary.clone()) {
            servers.insert(0, primary);
        }
        Ok(Client::unattached(servers, options)?)
    }

    /// The saved, logged-in session, resumed without a listener: a one-shot command exits
    /// before any notification could matter, and redirects find the primary anyway.
    async fn logged_in(&self) -> anyhow::Result<Client> {
        let saved = match &self.saved {
            Some(saved) if saved.token.is_some() && saved.client_id.is_some() => saved.clone(),
            _ => bail!(
                "not logged in: run `understudy client login USERNAME` first (session file {})",
                self.state_file.display()
            ),
        };
        let mut options = self.options.clone();
        options.listen_on_resume = false;
        Ok(Client::resume(self.servers.clone(), saved, options).await?)
    }

    fn save(&self, client: &Client) -> anyhow::Result<()> {
        save(&self.state_file, client)
    }

    async fn register(&self, username: &str, password: &str) -> anyhow::Result<()> {
        self.reader()?.register(username, password).await?;
        self.print(
            &serde_json::json!({ "username": username }),
            format!("registered {username}"),
        )
    }

    async fn login(&self, username: &str, password: &str) -> anyhow::Result<()> {
        let client = Client::connect(self.servers.clone(), self.options.clone()).await?;
        client.login(username, password).await?;
        self.save(&client)?;
        let client_id = client.client_id().unwrap_or_default().to_string();
        let primary = client.primary().unwrap_or_default();
        self.print(
            &serde_json::json!({ "client_id": client_id, "username": username, "primary": primary }),
            format!("logged in as {username} (client {client_id}, primary {primary})"),
        )
    }

    async fn send(&self, message: &str) -> anyhow::Result<()> {
        let client = self.logged_in().await?;
        let result = client.send(message).await;
        // Saved whatever the outcome: the next seq, or the pending message that a repeat
        // of this command must resend with the same seq.
        self.save(&client)?;
        let index = result.map_err(|err| match err {
            Error::Unavailable(_) | Error::NoPrimary | Error::NotPrimary { .. } => anyhow!(
                "{err}\nthe message may or may not be stored; send the same text again to retry safely"
            ),
            other => anyhow!(other),
        })?;
        self.print(
            &serde_json::json!({ "index": index }),
            format!("sent #{index}"),
        )
    }

    async fn messages(&self, from: u64, limit: u64) -> anyhow::Result<()> {
        let messages = self.reader()?.messages(from, limit).await?;
        self.print(
            &serde_json::json!({ "messages": messages }),
            messages_table(&messages),
        )
    }

    async fn clients(&self) -> anyhow::Result<()> {
        let clients = self.reader()?.clients().await?;
        self.print(
            &serde_json::json!({ "clients": clients }),
            clients_table(&clients),
        )
    }

    async fn status(&self, server: Option<&str>) -> anyhow::Result<()> {
        let client = self.reader()?;
        if let Some(server) = server {
            let status = client.status(Some(server)).await?;
            return self.print(&status, status_details(&status));
        }
        // Every server given and every member they name, each asked directly.
        let http = understudy::client::HttpClient::with_tls(
            self.options.request_timeout,
            self.options.tls.clone(),
        );
        let cluster = ClusterStatus::gather(&http, &client.servers()).await;
        self.print(&cluster.json(), cluster.table())?;
        if cluster.primary().is_none() {
            bail!(
                "no primary reachable: an election is running, or a majority of the servers cannot be reached"
            );
        }
        Ok(())
    }

    async fn logout(&self) -> anyhow::Result<()> {
        let client = self.logged_in().await?;
        client.logout().await?;
        SavedSession::remove(&self.state_file)?;
        self.print(&serde_json::json!({}), "logged out".to_string())
    }

    fn print<T: serde::Serialize + ?Sized>(&self, json: &T, text: String) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(json)?);
        } else if !text.is_empty() {
            println!("{text}");
        }
        Ok(())
    }

    /// The interactive loop. It continues the saved session if it can listen on that
    /// session's port again (where servers send notifications), else starts a new client.
    async fn shell(&self) -> anyhow::Result<()> {
        let mut client = self.shell_client().await?;
        println!(
            "client {} on {}; primary {}. Type `help` for commands.",
            client.client_id().unwrap_or("?"),
            client.servers().join(","),
            client.primary().unwrap_or_else(|| "unknown".to_string()),
        );
        let history = self.state_file.parent().map(|dir| dir.join("history"));
        let mut lines = ShellInput::new(history);
        let mut notifications = client.notifications();
        loop {
            let line = tokio::select! {
                line = lines.line("> ") => line?,
                () = next_notification(&mut notifications) => {
                    if let Some(note) = notifications.as_ref().and_then(|n| n.borrow().clone()) {
                        println!("primary is now {} (term {})", note.primary, note.term);
                    }
                    continue;
                }
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(line) = line else { break };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            let outcome = match command {
                "quit" | "exit" => break,
                "help" => {
                    println!("{SHELL_HELP}");
                    Ok(())
                }
                "login" => {
                    let result = self.shell_login(&client, rest, &mut lines).await;
                    match result {
                        // The servers do not know this client id (say, the cluster was
                        // rebuilt): start a new client and try once more.
                        Err(err) if is_unknown_client(&err) => {
                            client =
                                Client::connect(self.servers.clone(), self.options.clone()).await?;
                            notifications = client.notifications();
                            self.shell_login(&client, rest, &mut lines).await
                        }
                        other => other,
                    }
                }
                other => self.shell_command(&client, other, rest, &mut lines).await,
            };
            if let Err(err) = outcome {
                println!("error: {err:#}");
            }
        }
        self.save_merged(&client)?;
        Ok(())
    }

    /// Takes in the seqs a one-shot command used with this same login while the shell was
    /// open, so the shell's next message does not reuse one.
    fn catch_up(&self, client: &Client) -> anyhow::Result<()> {
        if let Some(saved) = SavedSession::load(&self.state_file)? {
            client.catch_up_with(&saved);
        }
        Ok(())
    }

    /// Saves the shell's session merged with what is in the file now, never over newer
    /// state: the same login is saved with the highest seq either used; another login in
    /// the file (logged in elsewhere since) is left alone; and a login whose file is gone
    /// (logged out elsewhere, which also ended it on the servers) is not written back.
    fn save_merged(&self, client: &Client) -> anyhow::Result<()> {
        let mine = client.saved();
        match SavedSession::load(&self.state_file)? {
            Some(theirs) if client.is_same_login(&theirs) => {
                client.catch_up_with(&theirs);
                self.save(client)
            }
            Some(theirs) if theirs.token.is_some() && mine.token.is_some() => {
                eprintln!(
                    "the session file holds another login now ({}); leaving it as it is",
                    theirs.username.as_deref().unwrap_or("unknown user")
                );
                Ok(())
            }
            None if mine.token.is_some() => {
                eprintln!("this login was ended elsewhere (logged out); not saving it again");
                Ok(())
            }
            _ => self.save(client),
        }
    }

    async fn shell_client(&self) -> anyhow::Result<Client> {
        if let Some(saved) = self.saved.clone().filter(|s| s.client_id.is_some()) {
            match Client::resume(self.servers.clone(), saved, self.options.clone()).await {
                Ok(client) => return Ok(client),
                Err(err) => eprintln!("cannot continue the saved session ({err}); starting anew"),
            }
        }
        Ok(Client::connect(self.servers.clone(), self.options.clone()).await?)
    }

    async fn shell_login(
        &self,
        client: &Client,
        rest: &str,
        lines: &mut ShellInput,
    ) -> anyhow::Result<()> {
        let (username, password) = self.shell_credentials(rest, lines).await?;
        client.login(&username, &password).await?;
        // A login in the shell takes the session file, whatever it held.
        self.save(client)?;
        println!("logged in as {username}");
        Ok(())
    }

    async fn shell_command(
        &self,
        client: &Client,
        command: &str,
        rest: &str,
        lines: &mut ShellInput,
    ) -> anyhow::Result<()> {
        let mut words = rest.split_whitespace();
        match command {
            "register" => {
                let (username, password) = self.shell_credentials(rest, lines).await?;
                client.register(&username, &password).await?;
                println!("registered {username}");
            }
            "send" => {
                if rest.is_empty() {
                    bail!("usage: send MESSAGE");
                }
                self.catch_up(client)?;
                let result = client.send(rest).await;
                self.save_merged(client)?;
                println!("sent #{}", result?);
            }
            "messages" => {
                let from = parse_or(words.next(), 1)?;
                let limit = parse_or(words.next(), 100)?;
                println!("{}", messages_table(&client.messages(from, limit).await?));
            }
            "clients" => println!("{}", clients_table(&client.clients().await?)),
            "status" => {
                let status = client.status(words.next()).await?;
                println!("{}", status_details(&status));
            }
            "primary" => println!(
                "{}",
                client.primary().unwrap_or_else(|| "unknown".to_string())
            ),
            "logout" => {
                client.logout().await?;
                self.save_merged(client)?;
                println!("logged out");
            }
            other => bail!("unknown command {other:?}; type `help`"),
        }
        Ok(())
    }

    /// `USERNAME [PASSWORD]`; without a password, `UNDERSTUDY_PASSWORD`, else the next line.
    async fn shell_credentials(
        &self,
        rest: &str,
        lines: &mut ShellInput,
    ) -> anyhow::Result<(String, String)> {
        let mut words = rest.split_whitespace();
        let Some(username) = words.next() else {
            bail!("usage: login|register USERNAME [PASSWORD]");
        };
        let password = match words.next() {
            Some(password) => password.to_string(),
            None => match std::env::var("UNDERSTUDY_PASSWORD") {
                Ok(password) => password,
                Err(_) => {
                    if std::io::stdin().is_terminal() && lines.is_plain() {
                        print!("password: ");
                        std::io::stdout().flush()?;
                    }
                    lines
                        .secret("password: ")
                        .await?
                        .context("no password given")?
                }
            },
        };
        Ok((username.to_string(), password))
    }
}

const SHELL_HELP: &str = "\
commands:
  register USERNAME [PASSWORD]   create a user
  login USERNAME [PASSWORD]      log in (the session is saved)
  send MESSAGE                   send a message to the board
  messages [FROM] [LIMIT]        list messages
  clients                        list clients
  status [HOST:PORT]             the state of the primary or of one server
  primary                        the primary this client talks to
  logout                         log out
  quit                           leave (also Ctrl-D, Ctrl-C)";

fn save(path: &Path, client: &Client) -> anyhow::Result<()> {
    client
        .saved()
        .save(path)
        .with_context(|| format!("cannot save the session to {}", path.display()))
}

/// Whether a login failed because the servers do not know the client id.
fn is_unknown_client(err: &anyhow::Error) -> bool {
    matches!(err.downcast_ref::<Error>(), Some(Error::NotFound(_)))
}

fn parse_or(word: Option<&str>, default: u64) -> anyhow::Result<u64> {
    match word {
        Some(word) => word
            .parse()
            .with_context(|| format!("not a number: {word:?}")),
        None => Ok(default),
    }
}

async fn next_notification(
    notifications: &mut Option<tokio::sync::watch::Receiver<Option<understudy::api::NewPrimary>>>,
) {
    if let Some(receiver) = notifications {
        if receiver.changed().await.is_ok() {
            return;
        }
        // The listener stopped; nothing more will come.
        *notifications = None;
    }
    std::future::pending::<()>().await
}

/// The local address this machine uses to reach `server`, port 0: the notification
/// listener then listens where the servers can call it back, and nowhere else. (A UDP
/// socket's `connect` only picks the route; nothing is sent.) Falls back to loopback.
fn listen_toward(server: &str) -> SocketAddr {
    use std::net::{ToSocketAddrs, UdpSocket};
    let local = server
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .and_then(|remote| {
            let any = if remote.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(any).ok()?;
            socket.connect(remote).ok()?;
            socket.local_addr().ok()
        });
    let ip = local.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |addr| addr.ip());
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        args: ClientArgs,
    }

    /// Contract, The binary: `understudy client --servers HOST:PORT[,...] <command>`.
    #[test]
    fn the_command_line_parses() {
        let w = Wrapper::try_parse_from([
            "x",
            "--servers",
            "127.0.0.1:7001,127.0.0.1:7002",
            "send",
            "hello",
            "-world",
        ])
        .unwrap();
        assert_eq!(w.args.servers, vec!["127.0.0.1:7001", "127.0.0.1:7002"]);
        match w.args.command {
            ClientCommand::Send { message } => assert_eq!(message.join(" "), "hello -world"),
            other => panic!("{other:?}"),
        }
        let w = Wrapper::try_parse_from([
            "x",
            "--servers",
            "a:1",
            "messages",
            "--from",
            "5",
            "--limit",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            w.args.command,
            ClientCommand::Messages { from: 5, limit: 2 }
        ));
        assert!(Wrapper::try_parse_from(["x", "--servers", "a:1", "send"]).is_err());
    }
}
