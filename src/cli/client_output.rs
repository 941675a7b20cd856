//! How `understudy client` prints what it gets: aligned tables of messages, clients and
//! server status.

use understudy::api::{ClientInfo, MessageInfo, StatusResponse};

/// Left-aligned columns; the last column is not padded (it holds free text).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.to_string()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(header.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

pub fn messages_table(messages: &[MessageInfo]) -> String {
    if messages.is_empty() {
        return "no messages".to_string();
    }
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            vec![
                m.index.to_string(),
                m.username.clone(),
                m.seq.to_string(),
                m.message.clone(),
            ]
        })
        .collect();
    table(&["#", "user", "seq", "message"], &rows)
}

pub fn clients_table(clients: &[ClientInfo]) -> String {
    if clients.is_empty() {
        return "no clients".to_string();
    }
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                c.client_id.clone(),
                c.address.clone(),
                c.username.clone().unwrap_or_else(|| "-".to_string()),
                if c.logged_in { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    table(&["client", "address", "user", "logged in"], &rows)
}

pub fn status_details(s: &StatusResponse) -> String {
    format!(
        "id:            {}\n\
         role:          {}\n\
         term:          {}\n\
         primary:       {}\n\
         members:       {}\n\
         commit index:  {}\n\
         applied index: {}\n\
         clients:       {} ({} logged in)\n\
         messages:      {}",
        s.id,
        s.role,
        s.term,
        s.primary.as_deref().unwrap_or("none"),
        s.members.join(", "),
        s.commit_index,
        s.applied_index,
        s.clients,
        s.logged_in,
        s.messages,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_all_but_the_last_column() {
        let t = table(
            &["#", "user", "message"],
            &[
                vec!["1".into(), "alice".into(), "hi there".into()],
                vec!["10".into(), "bo".into(), "x".into()],
            ],
        );
        assert_eq!(t, "#   user   message\n1   alice  hi there\n10  bo     x");
    }
}
