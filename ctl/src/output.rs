//! Output: agent_control's exact text layouts (with "Palisade" where OSSEC
//! prints "OSSEC HIDS") and the subcommands' tables and JSON.

use palisade_proto::v1::{AgentInfo, AgentStatus, ListAgentsResponse};
use serde_json::{Value, json};

/// agent_control's status words.
pub fn status_text(status: i32) -> &'static str {
    match AgentStatus::try_from(status).unwrap_or(AgentStatus::Unspecified) {
        AgentStatus::Active => "Active",
        AgentStatus::Disconnected => "Disconnected",
        AgentStatus::NeverConnected => "Never connected",
        AgentStatus::Removed => "Removed",
        AgentStatus::Unspecified => "Unknown",
    }
}

/// `-l` / `-lc` text, as agent_control prints it.
pub fn agent_control_list(
    list: &ListAgentsResponse,
    with_manager: bool,
    with_agentless: bool,
) -> String {
    let mut out = String::from("\nPalisade agent_control. List of available agents:\n");
    if with_manager {
        out.push_str(&format!(
            "   ID: 000, Name: {} (server), IP: 127.0.0.1, Active/Local\n",
            list.manager_hostname
        ));
    }
    for a in &list.agents {
        out.push_str(&format!(
            "   ID: {}, Name: {}, IP: {}, {}\n",
            a.id,
            a.name,
            a.registered_ip,
            status_text(a.status)
        ));
    }
    if with_agentless {
        out.push_str("\nList of agentless devices:\n");
    }
    out.push('\n');
    out
}

/// `-l -s`: one CSV line per agent, trailing comma as agent_control.
pub fn agent_control_csv(list: &ListAgentsResponse, with_manager: bool) -> String {
    let mut out = String::new();
    if with_manager {
        out.push_str(&format!(
            "000,{} (server),127.0.0.1,Active/Local,\n",
            list.manager_hostname
        ));
    }
    for a in &list.agents {
        out.push_str(&format!(
            "{},{},{},{},\n",
            a.id,
            a.name,
            a.registered_ip,
            status_text(a.status)
        ));
    }
    out
}

/// `-l -j`: agent_control's JSON envelope.
pub fn agent_control_json(list: &ListAgentsResponse, with_manager: bool) -> Value {
    let mut agents = Vec::new();
    if with_manager {
        agents.push(json!({"id": "000", "name": list.manager_hostname, "ip": "127.0.0.1", "status": "Active"}));
    }
    for a in &list.agents {
        agents.push(json!({"id": a.id, "name": a.name, "ip": a.registered_ip, "status": status_text(a.status)}));
    }
    json!({"error": 0, "response": agents})
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `agents`: an aligned table.
pub fn agents_table(list: &ListAgentsResponse) -> String {
    let header = [
        "ID",
        "NAME",
        "IP",
        "ADDRESS",
        "STATUS",
        "VERSION",
        "LAST SEEN",
    ];
    let rows: Vec<[String; 7]> = list
        .agents
        .iter()
        .map(|a| {
            [
                a.id.clone(),
                a.name.clone(),
                a.registered_ip.clone(),
                if a.last_address.is_empty() {
                    "-".into()
                } else {
                    a.last_address.clone()
                },
                status_text(a.status).to_string(),
                if a.version.is_empty() {
                    "-".into()
                } else {
                    a.version.clone()
                },
                time_text(a.last_seen.as_ref()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(no agents)\n");
    }
    out
}

/// `agents --json`: every field.
pub fn agents_json(list: &ListAgentsResponse) -> Value {
    Value::Array(list.agents.iter().map(agent_json).collect())
}

fn agent_json(a: &AgentInfo) -> Value {
    let ts = |t: Option<&prost_types::Timestamp>| {
        t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
            .map(|t| Value::String(t.to_string()))
            .unwrap_or(Value::Null)
    };
    json!({
        "id": a.id,
        "name": a.name,
        "ip": a.registered_ip,
        "address": a.last_address,
        "status": status_text(a.status),
        "version": a.version,
        "os": a.os,
        "hostname": a.hostname,
        "last_seen": ts(a.last_seen.as_ref()),
        "registered_at": ts(a.registered_at.as_ref()),
        "spool_depth": a.spool_depth,
        "dropped_events": a.dropped_events,
        "read_lag_bytes": a.read_lag_bytes,
    })
}

/// Prints JSON on one line.
pub fn print_json(v: &Value) {
    println!("{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> ListAgentsResponse {
        ListAgentsResponse {
            manager_hostname: "central".into(),
            agents: vec![AgentInfo {
                id: "083".into(),
                name: "web01".into(),
                registered_ip: "10.0.0.5".into(),
                status: AgentStatus::Active as i32,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn list_matches_agent_control_layout() {
        assert_eq!(
            agent_control_list(&list(), true, true),
            "\nPalisade agent_control. List of available agents:\n   ID: 000, Name: central (server), IP: 127.0.0.1, Active/Local\n   ID: 083, Name: web01, IP: 10.0.0.5, Active\n\nList of agentless devices:\n\n"
        );
        assert_eq!(
            agent_control_csv(&list(), true),
            "000,central (server),127.0.0.1,Active/Local,\n083,web01,10.0.0.5,Active,\n"
        );
    }
}
