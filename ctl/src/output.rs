//! Output: agent_control's exact text layouts (with "Palisade" where OSSEC
//! prints "OSSEC HIDS") and the subcommands' tables and JSON.

use palisade_proto::v1::{
    AgentInfo, AgentStatus, ListAgentsResponse, ListBlocksResponse, ListRefusalsResponse,
    ListResponsesResponse, RunResponseResponse, UnblockResponse,
};
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
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = list
        .agents
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.name.clone(),
                a.registered_ip.clone(),
                dash(&a.last_address),
                status_text(a.status).to_string(),
                dash(&a.version),
                time_text(a.last_seen.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "IP",
            "ADDRESS",
            "STATUS",
            "VERSION",
            "LAST SEEN",
        ],
        &rows,
        "(no agents)",
    )
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

/// `-L`, as agent_control prints it.
pub fn agent_control_responses(list: &ListResponsesResponse) -> String {
    let mut out = String::from("\nPalisade agent_control. Available active responses:\n");
    if list.responses.is_empty() {
        out.push_str("\n   No active response available.\n\n");
        return out;
    }
    for r in &list.responses {
        out.push_str(&format!(
            "\n   Response name: {}, command: {}",
            r.name, r.executable
        ));
    }
    out.push_str("\n\n");
    out
}

/// `-b IP -f NAME -u ID`, as agent_control prints it, plus a line for a
/// command that waits for an offline agent.
pub fn agent_control_run(response: &str, agent: Option<&str>, r: &RunResponseResponse) -> String {
    let target = agent.unwrap_or("all agents");
    let mut out =
        format!("\nPalisade agent_control: Running active response '{response}' on: {target}\n");
    for id in &r.queued_for {
        out.push_str(&format!(
            "   Agent {id} is not connected: queued, it runs when the agent reconnects.\n"
        ));
    }
    out
}

/// `block`: one line per agent.
pub fn run_summary(response: &str, ip: &str, r: &RunResponseResponse) -> String {
    let mut out = String::new();
    for id in &r.sent_to {
        out.push_str(&format!("{response} {ip}: sent to agent {id}\n"));
    }
    for id in &r.queued_for {
        out.push_str(&format!(
            "{response} {ip}: agent {id} is not connected; queued until it reconnects\n"
        ));
    }
    out
}

/// `unblock`: one line per agent.
pub fn unblock_summary(ip: &str, r: &UnblockResponse) -> String {
    let mut out = String::new();
    for id in &r.agent_ids {
        out.push_str(&format!("unblock {ip}: sent to agent {id}\n"));
    }
    for id in &r.queued_for {
        out.push_str(&format!(
            "unblock {ip}: agent {id} is not connected; queued until it reconnects\n"
        ));
    }
    out
}

fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str(empty);
        out.push('\n');
    }
    out
}

/// `responses`: a table.
pub fn responses_table(list: &ListResponsesResponse) -> String {
    let rows: Vec<Vec<String>> = list
        .responses
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.command.clone(),
                r.executable.clone(),
                if r.timeout_seconds == 0 {
                    "none".into()
                } else {
                    format!("{}s", r.timeout_seconds)
                },
                r.location.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "COMMAND", "EXECUTABLE", "TIMEOUT", "LOCATION"],
        &rows,
        "(no active responses configured)",
    )
}

/// `responses --json`.
pub fn responses_json(list: &ListResponsesResponse) -> Value {
    Value::Array(
        list.responses
            .iter()
            .map(|r| {
                json!({"name": r.name, "command": r.command, "executable": r.executable,
                       "timeout_seconds": r.timeout_seconds, "location": r.location})
            })
            .collect(),
    )
}

/// `blocks`: a table.
pub fn blocks_table(list: &ListBlocksResponse) -> String {
    let rows: Vec<Vec<String>> = list
        .blocks
        .iter()
        .map(|b| {
            vec![
                b.srcip.clone(),
                b.agent_id.clone(),
                b.response.clone(),
                if b.rule_id == 0 {
                    "-".into()
                } else {
                    b.rule_id.to_string()
                },
                time_text(b.added_at.as_ref()),
                if b.expires_at.is_some() {
                    time_text(b.expires_at.as_ref())
                } else {
                    "never".into()
                },
                b.state.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SRCIP", "AGENT", "RESPONSE", "RULE", "ADDED", "EXPIRES", "STATE",
        ],
        &rows,
        "(no blocks in force)",
    )
}

/// `blocks --json`.
pub fn blocks_json(list: &ListBlocksResponse) -> Value {
    let ts = |t: Option<&prost_types::Timestamp>| {
        t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
            .map(|t| Value::String(t.to_string()))
            .unwrap_or(Value::Null)
    };
    Value::Array(
        list.blocks
            .iter()
            .map(|b| {
                json!({"srcip": b.srcip, "agent": b.agent_id, "response": b.response,
                       "rule": if b.rule_id == 0 { Value::Null } else { json!(b.rule_id) },
                       "alert": if b.alert_id.is_empty() { Value::Null } else { json!(b.alert_id) },
                       "added_at": ts(b.added_at.as_ref()), "expires_at": ts(b.expires_at.as_ref()),
                       "state": b.state})
            })
            .collect(),
    )
}

/// `refusals`: a table.
pub fn refusals_table(list: &ListRefusalsResponse) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = list
        .refusals
        .iter()
        .map(|r| {
            vec![
                time_text(r.time.as_ref()),
                r.response.clone(),
                dash(&r.agent_id),
                if r.rule_id == 0 {
                    "-".into()
                } else {
                    r.rule_id.to_string()
                },
                dash(&r.srcip),
                r.reason.clone(),
            ]
        })
        .collect();
    table(
        &["TIME", "RESPONSE", "AGENT", "RULE", "SRCIP", "REASON"],
        &rows,
        "(no refused responses)",
    )
}

/// `refusals --json`.
pub fn refusals_json(list: &ListRefusalsResponse) -> Value {
    Value::Array(
        list.refusals
            .iter()
            .map(|r| {
                let time = r
                    .time
                    .as_ref()
                    .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
                    .map(|t| Value::String(t.to_string()))
                    .unwrap_or(Value::Null);
                json!({"time": time, "response": r.response, "agent": r.agent_id,
                       "rule": r.rule_id, "srcip": r.srcip, "reason": r.reason})
            })
            .collect(),
    )
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
