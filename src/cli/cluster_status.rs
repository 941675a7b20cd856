//! One view of the cluster for `client status` and `admin status`: every server given and
//! every member their answers name, each asked directly (an operator wants to see the dead
//! ones too), shown as one table, or as JSON, with the reason a member did not answer and,
//! from the primary's view, how far behind each backup is and when it was last heard.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use understudy::api::StatusResponse;
use understudy::client::HttpClient;

use super::client_output::table;

/// Each server asked, with its answer or why there was none.
pub struct ClusterStatus {
    pub rows: Vec<(String, Result<StatusResponse, String>)>,
}

impl ClusterStatus {
    /// Asks `servers`, then every member the answers name that was not asked yet, until
    /// nobody new is named.
    pub async fn gather(http: &HttpClient, servers: &[String]) -> ClusterStatus {
        let mut rows: Vec<(String, Result<StatusResponse, String>)> = Vec::new();
        let mut asked: BTreeSet<String> = BTreeSet::new();
        let mut next: Vec<String> = servers.to_vec();
        while !next.is_empty() {
            next.retain(|server| asked.insert(server.clone()));
            let answers = join_all(next.iter().map(|server| ask(http, server))).await;
            let named: BTreeSet<String> = answers
                .iter()
                .flatten()
                .flat_map(|status| status.members.iter().cloned())
                .collect();
            rows.extend(next.drain(..).zip(answers));
            next = named.into_iter().filter(|m| !asked.contains(m)).collect();
        }
        ClusterStatus { rows }
    }

    /// The answer of a server that says it is the primary, if any answered.
    pub fn primary(&self) -> Option<&StatusResponse> {
        self.rows
            .iter()
            .filter_map(|(_, answer)| answer.as_ref().ok())
            .find(|status| status.role == "primary")
    }

    /// One row per server: role, term, primary, commit and applied index; from the
    /// primary's view, lag and last contact; the reason if it did not answer.
    pub fn table(&self) -> String {
        let view = self.primary();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(server, answer)| {
                let seen = view.and_then(|p| p.peers.iter().find(|peer| peer.id == *server));
                let lag = match seen {
                    Some(peer) => match (peer.lag_entries, peer.lag_ms) {
                        (Some(entries), Some(ms)) => format!("{entries} ({ms} ms)"),
                        (Some(entries), None) => entries.to_string(),
                        _ => "-".to_string(),
                    },
                    None => "-".to_string(),
                };
                let contact = seen
                    .and_then(|peer| peer.last_heard_ms)
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms ago"));
                match answer {
                    Ok(s) => vec![
                        server.clone(),
                        s.role.clone(),
                        s.term.to_string(),
                        s.primary.clone().unwrap_or_else(|| "none".to_string()),
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        lag,
                        contact,
                        String::new(),
                    ],
                    Err(why) => vec![
                        server.clone(),
                        "unreachable".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        lag,
                        contact,
                        why.clone(),
                    ],
                }
            })
            .collect();
        table(
            &[
                "server",
                "role",
                "term",
                "primary",
                "commit",
                "applied",
                "lag",
                "last contact",
                "note",
            ],
            &rows,
        )
    }

    /// `[{"server", "status"} | {"server", "error"}, ...]`.
    pub fn json(&self) -> serde_json::Value {
        self.rows
            .iter()
            .map(|(server, answer)| match answer {
                Ok(status) => serde_json::json!({ "server": server, "status": status }),
                Err(why) => serde_json::json!({ "server": server, "error": why }),
            })
            .collect()
    }
}

/// `GET /status` of one server, or why it did not answer.
async fn ask(http: &HttpClient, server: &str) -> Result<StatusResponse, String> {
    let response = http
        .get(server, "/status", &[])
        .await
        .map_err(|err| err.to_string())?;
    if response.status != 200 {
        return Err(format!(
            "HTTP {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    response.json().map_err(|err| err.to_string())
}
