//! Output: agent_control's exact text layouts (with "Palisade" where OSSEC
//! prints "OSSEC HIDS") and the subcommands' tables and JSON.
//!
//! Names, host names, versions, locations, log lines and reasons come from
//! agents (and from the clients their hosts log): every such field is
//! printed through [`palisade_engine::escape`] (as [`e`]), so that none can
//! forge a line or a table row or send the terminal an escape sequence.
//! JSON keeps the values exact ([`print_json`]).

use palisade_engine::escape::{escape_text, json_safe};
use palisade_proto::v1::{
    AgentInfo, AgentStatus, Alert, ListAgentsResponse, ListBlocksResponse, ListRefusalsResponse,
    ListResponsesResponse, ManagerStatus, RestartAgentResponse, RunResponseResponse,
    StatusResponse, UnblockResponse,
};
use serde_json::{Value, json};

/// A field from outside, escaped for the terminal.
fn e(s: &str) -> std::borrow::Cow<'_, str> {
    escape_text(s)
}

/// [`e`], for the few lines printed outside this module.
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    e(s)
}

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
            e(&list.manager_hostname)
        ));
    }
    for a in &list.agents {
        out.push_str(&format!(
            "   ID: {}, Name: {}, IP: {}, {}\n",
            e(&a.id),
            e(&a.name),
            e(&a.registered_ip),
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
            e(&list.manager_hostname)
        ));
    }
    for a in &list.agents {
        out.push_str(&format!(
            "{},{},{},{},\n",
            e(&a.id),
            e(&a.name),
            e(&a.registered_ip),
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
        let mut agent = json!({"id": a.id, "name": a.name, "ip": a.registered_ip, "status": status_text(a.status)});
        // The manager it is connected to, absent when it is not.
        if !a.manager.is_empty() {
            agent["manager"] = json!(a.manager);
        }
        agents.push(agent);
    }
    json!({"error": 0, "response": agents})
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(palisade_common::time::jiff_from_proto)
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
                dash(&a.manager),
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
            "MANAGER",
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
        t.and_then(palisade_common::time::jiff_from_proto)
            .map(|t| Value::String(t.to_string()))
            .unwrap_or(Value::Null)
    };
    json!({
        "id": a.id,
        "name": a.name,
        "ip": a.registered_ip,
        "address": a.last_address,
        "status": status_text(a.status),
        "manager": (!a.manager.is_empty()).then_some(&a.manager),
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
            e(&r.name),
            e(&r.executable)
        ));
    }
    out.push_str("\n\n");
    out
}

/// `-b IP -f NAME -u ID`, as agent_control prints it, plus a line for a
/// command that waits for an offline agent.
pub fn agent_control_run(response: &str, agent: Option<&str>, r: &RunResponseResponse) -> String {
    let target = e(agent.unwrap_or("all agents"));
    let response = e(response);
    let mut out =
        format!("\nPalisade agent_control: Running active response '{response}' on: {target}\n");
    for id in &r.queued_for {
        out.push_str(&format!(
            "   Agent {} is not connected: queued, it runs when the agent reconnects.\n",
            e(id)
        ));
    }
    out
}

/// `block`: one line per agent.
pub fn run_summary(response: &str, ip: &str, r: &RunResponseResponse) -> String {
    let (response, ip) = (e(response), e(ip));
    let mut out = String::new();
    for id in &r.sent_to {
        out.push_str(&format!("{response} {ip}: sent to agent {}\n", e(id)));
    }
    for id in &r.queued_for {
        out.push_str(&format!(
            "{response} {ip}: agent {} is not connected; queued until it reconnects\n",
            e(id)
        ));
    }
    out
}

/// `unblock`: one line per agent.
pub fn unblock_summary(ip: &str, r: &UnblockResponse) -> String {
    let ip = e(ip);
    let mut out = String::new();
    for id in &r.agent_ids {
        out.push_str(&format!("unblock {ip}: sent to agent {}\n", e(id)));
    }
    for id in &r.queued_for {
        out.push_str(&format!(
            "unblock {ip}: agent {} is not connected; queued until it reconnects\n",
            e(id)
        ));
    }
    out
}

/// An aligned table; every cell is escaped (a cell is one line, its
/// control characters visible).
fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| e(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
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
        t.and_then(palisade_common::time::jiff_from_proto)
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
                    .and_then(palisade_common::time::jiff_from_proto)
                    .map(|t| Value::String(t.to_string()))
                    .unwrap_or(Value::Null);
                json!({"time": time, "response": r.response, "agent": r.agent_id,
                       "rule": r.rule_id, "srcip": r.srcip, "reason": r.reason})
            })
            .collect(),
    )
}

/// agent_control's time layout (C `ctime`, local time, no newline), or
/// `Unknown` as agent_control prints for an agent never heard from.
pub fn ctime_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(palisade_common::time::jiff_from_proto)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%a %b %e %H:%M:%S %Y")
                .to_string()
        })
        .unwrap_or_else(|| "Unknown".into())
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "Unknown" } else { s }
}

fn is_manager(a: &AgentInfo) -> bool {
    a.id == "000"
}

/// `-i ID`, as agent_control prints it; Palisade's own figures (when the
/// agent started, spool depth, dropped events) take the place of the
/// syscheck/rootcheck lines.
pub fn agent_control_info(a: &AgentInfo) -> String {
    let mut out = String::from("\nPalisade agent_control. Agent information:");
    if is_manager(a) {
        out.push_str(&format!(
            "\n   Agent ID:   000 (local instance)\n   Agent Name: {}\n   IP address: 127.0.0.1\n   Status:     {}/Local\n\n",
            e(&a.name),
            status_text(a.status)
        ));
    } else {
        out.push_str(&format!(
            "\n   Agent ID:   {}\n   Agent Name: {}\n   IP address: {}\n   Status:     {}\n\n",
            e(&a.id),
            e(&a.name),
            e(&a.registered_ip),
            status_text(a.status)
        ));
    }
    out.push_str(&format!(
        "   Operating system:    {}\n   Client version:      {}\n   Last keep alive:     {}\n\n",
        e(or_unknown(&a.os)),
        e(or_unknown(&a.version)),
        ctime_text(a.last_seen.as_ref())
    ));
    out.push_str(&format!(
        "   Agent started at:    {}\n",
        ctime_text(a.started_at.as_ref())
    ));
    if !is_manager(a) {
        out.push_str(&format!(
            "   Spool depth:         {}\n   Dropped events:      {}\n",
            a.spool_depth, a.dropped_events
        ));
    }
    if !a.last_refusal.is_empty() {
        out.push_str(&format!(
            "   Last refused:        {} ({})\n",
            ctime_text(a.last_refused_at.as_ref()),
            a.last_refusal
        ));
    }
    out
}

/// `-i ID -s`: agent_control's CSV line, Palisade's figures in place of
/// syscheck/rootcheck.
pub fn agent_control_info_csv(a: &AgentInfo) -> String {
    let (ip, status) = if is_manager(a) {
        (
            "127.0.0.1".to_string(),
            format!("{}/Local", status_text(a.status)),
        )
    } else {
        (a.registered_ip.clone(), status_text(a.status).to_string())
    };
    format!(
        "{},{},{},{},{},{},{},{},{},{},\n",
        e(&a.id),
        e(&a.name),
        e(&ip),
        status,
        e(or_unknown(&a.os)),
        e(or_unknown(&a.version)),
        ctime_text(a.last_seen.as_ref()),
        ctime_text(a.started_at.as_ref()),
        a.spool_depth,
        a.dropped_events
    )
}

/// `-i ID -j`: agent_control's JSON envelope.
pub fn agent_control_info_json(a: &AgentInfo) -> Value {
    json!({"error": 0, "response": {
        "id": if is_manager(a) { "000 (local instance)".to_string() } else { a.id.clone() },
        "name": a.name,
        "ip": if is_manager(a) { "127.0.0.1" } else { a.registered_ip.as_str() },
        "status": status_text(a.status),
        "operating_system": or_unknown(&a.os),
        "client_version": or_unknown(&a.version),
        "last_keepalive": ctime_text(a.last_seen.as_ref()),
        "started_at": ctime_text(a.started_at.as_ref()),
        "spool_depth": a.spool_depth,
        "dropped_events": a.dropped_events,
    }})
}

/// `-R ID`, as agent_control prints it.
pub fn agent_control_restart(id: &str) -> String {
    format!("\nPalisade agent_control: Restarting agent: {}\n", e(id))
}

/// `-R -a`: the agents asked, and those that could not be.
pub fn agent_control_restart_all(r: &RestartAgentResponse) -> String {
    let mut out = String::from("\nPalisade agent_control: Restarting all agents.\n");
    for id in &r.sent_to {
        out.push_str(&format!("   Agent {}: restarting.\n", e(id)));
    }
    for id in &r.not_connected {
        out.push_str(&format!(
            "   Agent {} is not connected: not restarted.\n",
            e(id)
        ));
    }
    out
}

/// `-R ID -j` / `-R -a -j`.
pub fn restart_json(r: &RestartAgentResponse) -> Value {
    json!({"error": 0, "response": {"restarting": r.sent_to, "not_connected": r.not_connected, "through_other_manager": r.forwarded}})
}

/// `agent ID`: one field a line.
pub fn agent_detail(a: &AgentInfo) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<(&str, String)> = vec![
        ("ID", a.id.clone()),
        ("Name", a.name.clone()),
        ("IP", a.registered_ip.clone()),
        ("Status", status_text(a.status).to_string()),
        ("Manager", dash(&a.manager)),
        ("Address", dash(&a.last_address)),
        ("Hostname", dash(&a.hostname)),
        ("OS", dash(&a.os)),
        ("Version", dash(&a.version)),
        ("Started at", time_text(a.started_at.as_ref())),
        ("Last seen", time_text(a.last_seen.as_ref())),
        ("Registered at", time_text(a.registered_at.as_ref())),
        ("Last sequence", a.last_sequence.to_string()),
        ("Spool depth", a.spool_depth.to_string()),
        ("Dropped events", a.dropped_events.to_string()),
        ("Read lag", format!("{} bytes", a.read_lag_bytes)),
        ("Last refused", last_refused(a)),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<15} {}\n", format!("{k}:"), e(v)))
        .collect()
}

/// `agent ID --json`: every field.
pub fn agent_detail_json(a: &AgentInfo) -> Value {
    let mut v = agent_json(a);
    if let Value::Object(map) = &mut v {
        map.insert("started_at".into(), ts_json(a.started_at.as_ref()));
        map.insert("last_sequence".into(), json!(a.last_sequence));
        map.insert(
            "last_refused_at".into(),
            ts_json(a.last_refused_at.as_ref()),
        );
        map.insert("last_refusal".into(), json!(a.last_refusal));
    }
    v
}

/// When and why the agent's last stream was refused, or `-`.
fn last_refused(a: &AgentInfo) -> String {
    if a.last_refusal.is_empty() {
        return "-".into();
    }
    format!(
        "{}: {}",
        time_text(a.last_refused_at.as_ref()),
        a.last_refusal
    )
}

fn ts_json(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(palisade_common::time::jiff_from_proto)
        .map(|t| Value::String(t.to_string()))
        .unwrap_or(Value::Null)
}

/// `agent remove ID`.
pub fn removed_text(a: &AgentInfo) -> String {
    format!(
        "Agent {} ({}) removed: its certificate is revoked and its stream ended.\n",
        e(&a.id),
        e(&a.name)
    )
}

fn responses_text(a: &Alert) -> String {
    if a.responses.is_empty() {
        return "-".into();
    }
    a.responses
        .iter()
        .map(|r| format!("{}@{}:{}", r.response, r.agent_id, r.status))
        .collect::<Vec<_>>()
        .join(",")
}

fn agent_text(a: &Alert) -> String {
    let id = if a.agent_id.is_empty() {
        "000"
    } else {
        a.agent_id.as_str()
    };
    if a.agent_name.is_empty() {
        id.to_string()
    } else {
        format!("{id} ({})", a.agent_name)
    }
}

const ALERT_HEADER: [&str; 8] = [
    "TIME",
    "ID",
    "AGENT",
    "RULE",
    "LEVEL",
    "SRCIP",
    "DESCRIPTION",
    "RESPONSES",
];

fn alert_row(a: &Alert) -> Vec<String> {
    vec![
        time_text(a.time.as_ref()),
        a.id.clone(),
        agent_text(a),
        a.rule_id.to_string(),
        a.level.to_string(),
        if a.srcip.is_empty() {
            "-".into()
        } else {
            a.srcip.clone()
        },
        a.description.clone(),
        responses_text(a),
    ]
}

/// `alerts`: a table, oldest first.
/// `alerts --json`: one array.
pub fn alerts_json(alerts: &[Alert]) -> Value {
    Value::Array(alerts.iter().map(alert_json).collect())
}

/// Writes `text` to standard output. A reader that went away (`| head`,
/// a closed pager) ends the program quietly with success, as Unix tools
/// do, instead of a panic; any other write error ends it with a failure.
pub fn emit(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(text).and_then(|()| out.flush()) {
        let exit = if error.kind() == std::io::ErrorKind::BrokenPipe {
            palisade_common::exit::Exit::Success
        } else {
            eprintln!("palisadectl: cannot write the output: {error}");
            palisade_common::exit::Exit::Failure
        };
        std::process::exit(i32::from(exit.code()));
    }
}

/// Prints `value` as JSON or as text, as the command's `--json` says.
pub fn show<T: ?Sized>(json: bool, value: &T, as_json: fn(&T) -> Value, as_text: fn(&T) -> String) {
    if json {
        print_json(&as_json(value));
    } else {
        crate::out!("{}", as_text(value));
    }
}

pub fn alerts_table(alerts: &[Alert]) -> String {
    let rows: Vec<Vec<String>> = alerts.iter().map(alert_row).collect();
    table(&ALERT_HEADER, &rows, "(no alerts)")
}

/// `alerts --follow`: one line per alert as it comes (tab-separated, the
/// table's columns: columns cannot be aligned on a stream).
pub fn alert_line(a: &Alert) -> String {
    let mut line = alert_row(a)
        .iter()
        .map(|c| e(c).into_owned())
        .collect::<Vec<_>>()
        .join("\t");
    line.push('\n');
    line
}

/// `alerts --follow`: the header line.
pub fn alert_header_line() -> String {
    let mut line = ALERT_HEADER.join("\t");
    line.push('\n');
    line
}

/// One alert as JSON.
pub fn alert_json(a: &Alert) -> Value {
    json!({
        "id": a.id,
        "time": ts_json(a.time.as_ref()),
        "rule": a.rule_id,
        "level": a.level,
        "description": a.description,
        "groups": a.groups,
        "agent": if a.agent_id.is_empty() { "000" } else { a.agent_id.as_str() },
        "agent_name": a.agent_name,
        "location": a.location,
        "decoder": a.decoder,
        "srcip": a.srcip,
        "srcport": a.srcport,
        "dstip": a.dstip,
        "dstport": a.dstport,
        "user": a.user,
        "url": a.url,
        "log": a.log.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>(),
        "responses": a.responses.iter().map(|r| json!({
            "command_id": r.command_id, "response": r.response, "agent": r.agent_id, "status": r.status,
        })).collect::<Vec<_>>(),
    })
}

/// `status`.
pub fn status_text_block(s: &StatusResponse) -> String {
    status_text_with(s, false)
}

/// `status -v`: each manager's agents by name too.
pub fn status_text_verbose(s: &StatusResponse) -> String {
    status_text_with(s, true)
}

fn status_text_with(s: &StatusResponse, verbose: bool) -> String {
    let up = s.uptime_seconds;
    let uptime = format!(
        "{}d {:02}h {:02}m {:02}s",
        up / 86_400,
        (up % 86_400) / 3600,
        (up % 3600) / 60,
        up % 60
    );
    format!(
        "Palisade manager {} on {}\n\
         Started:           {}\n\
         Uptime:            {uptime}\n\
         Events/s:          {:.1} (last minute)\n\
         Events received:   {}\n\
         Agents:            {} connected of {}\n\
         Alerts:            {}\n\
         Responses issued:  {}\n\
         Mail queue:        {}\n",
        e(&s.version),
        e(&s.hostname),
        time_text(s.started_at.as_ref()),
        s.events_per_second,
        s.events_received,
        s.connected_agents,
        s.agents,
        s.alerts,
        s.responses_issued,
        s.mail_queue,
    ) + &managers_text(s, verbose)
}

/// What a manager is in `status`: `alive`, `stopped` (cleanly) or `dead`.
fn manager_state(m: &ManagerStatus) -> &'static str {
    match (m.alive, m.stopped) {
        (true, _) => "alive",
        (false, true) => "stopped",
        (false, false) => "dead",
    }
}

/// `status`: the managers on the database, the one answering marked.
fn managers_text(s: &StatusResponse, verbose: bool) -> String {
    if s.managers.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = s
        .managers
        .iter()
        .map(|m| {
            let mark = if m.name == s.manager_name { " *" } else { "" };
            vec![
                format!("{}{mark}", m.name),
                m.address.clone(),
                manager_state(m).to_string(),
                time_text(if m.alive {
                    m.started_at.as_ref()
                } else {
                    m.heartbeat_at.as_ref()
                }),
                m.connected_agents.to_string(),
                format!("{:.1}", m.events_per_second),
                format!("{:.1}", m.alerts_per_second),
            ]
        })
        .collect();
    let mut out =
        String::from("\nManagers (* answered; SINCE: started if alive, else last heard):\n");
    out.push_str(&table(
        &[
            "NAME", "ADDRESS", "STATE", "SINCE", "AGENTS", "EVENTS/S", "ALERTS/S",
        ],
        &rows,
        "(none)",
    ));
    if verbose {
        out.push_str("\nAgents by manager:\n");
        for m in &s.managers {
            let names: Vec<String> = m.agent_names.iter().map(|n| e(n).into_owned()).collect();
            out.push_str(&format!(
                "  {}: {}\n",
                e(&m.name),
                if names.is_empty() {
                    "-".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
    }
    out
}

/// `status --json`.
pub fn status_json(s: &StatusResponse) -> Value {
    json!({
        "version": s.version,
        "hostname": s.hostname,
        "started_at": ts_json(s.started_at.as_ref()),
        "uptime_seconds": s.uptime_seconds,
        "events_per_second": s.events_per_second,
        "events_received": s.events_received,
        "agents": s.agents,
        "connected_agents": s.connected_agents,
        "alerts": s.alerts,
        "responses_issued": s.responses_issued,
        "mail_queue": s.mail_queue,
        "manager": s.manager_name,
        "managers": s.managers.iter().map(|m| json!({
            "name": m.name,
            "address": m.address,
            "version": m.version,
            "state": manager_state(m),
            "started_at": ts_json(m.started_at.as_ref()),
            "heartbeat_at": ts_json(m.heartbeat_at.as_ref()),
            "connected_agents": m.connected_agents,
            "agents": m.agent_names,
            "events_per_second": m.events_per_second,
            "alerts_per_second": m.alerts_per_second,
        })).collect::<Vec<_>>(),
    })
}

/// JSON on one line, the values exact and no control character in the
/// text ([`json_safe`]).
pub fn json_line(v: &Value) -> String {
    json_safe(v.to_string())
}

/// Prints JSON on one line ([`json_line`]).
pub fn print_json(v: &Value) {
    crate::outln!("{}", json_line(v));
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

    /// Text that tries to forge a row, a line and a terminal sequence.
    const FORGE: &str = "x\n999  evil  6.6.6.6  -  Active\r\x1b[2J\x1b]0;t\x07\u{9b}1m\tcol";
    const FORGE_SHOWN: &str =
        r"x\n999  evil  6.6.6.6  -  Active\r\x1b[2J\x1b]0;t\x07\u{009b}1m\tcol";

    fn hostile_agent() -> AgentInfo {
        AgentInfo {
            id: "083".into(),
            name: format!("web{FORGE}"),
            registered_ip: "10.0.0.5".into(),
            last_address: format!("10.0.0.5{FORGE}"),
            status: AgentStatus::Active as i32,
            version: format!("1.0{FORGE}"),
            os: format!("Linux{FORGE}"),
            hostname: format!("h{FORGE}"),
            ..Default::default()
        }
    }

    /// `text` has `lines` lines and no control character but their ends.
    fn assert_clean(text: &str, lines: usize) {
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && palisade_engine::escape::needs_escape(c)),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), lines, "{text}");
    }

    #[test]
    fn agent_fields_cannot_forge_rows_or_sequences() {
        let list = ListAgentsResponse {
            manager_hostname: format!("central{FORGE}"),
            agents: vec![hostile_agent()],
        };
        let table = agents_table(&list);
        assert_clean(&table, 2);
        assert!(table.contains(&format!("web{FORGE_SHOWN}")), "{table}");
        assert_clean(&agent_control_list(&list, true, false), 5);
        assert_clean(&agent_control_csv(&list, true), 2);
        let a = hostile_agent();
        let info = agent_control_info(&a);
        assert_clean(&info, info.lines().count());
        assert!(info.contains(&format!("Client version:      1.0{FORGE_SHOWN}\n")));
        assert_clean(&agent_control_info_csv(&a), 1);
        let detail = agent_detail(&a);
        assert_clean(&detail, 17);
        assert!(detail.contains(&format!("OS:             Linux{FORGE_SHOWN}\n")));
        assert_clean(&removed_text(&a), 1);
        let json = json_line(&agents_json(&list));
        assert_clean(&json, 1);
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0]["version"], a.version, "JSON keeps the value");
    }

    #[test]
    fn status_lists_the_managers_and_their_agents() {
        let manager = |name: &str, alive: bool, agents: &[&str]| ManagerStatus {
            name: name.into(),
            address: "192.0.2.1:1515".into(),
            alive,
            connected_agents: agents.len() as u32,
            agent_names: agents.iter().map(|a| a.to_string()).collect(),
            events_per_second: 12.25,
            ..Default::default()
        };
        let status = StatusResponse {
            manager_name: "mgr-b".into(),
            connected_agents: 2,
            agents: 3,
            managers: vec![
                manager("mgr-a", false, &[]),
                manager("mgr-b", true, &["web01", &format!("web{FORGE}")]),
            ],
            ..Default::default()
        };
        let text = status_text_block(&status);
        assert!(
            text.contains("Agents:            2 connected of 3\n"),
            "{text}"
        );
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("NAME"))
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(
            rows[1].starts_with("mgr-a ") && rows[1].contains(" dead "),
            "{text}"
        );
        assert!(
            rows[2].starts_with("mgr-b *") && rows[2].contains(" alive "),
            "{text}"
        );
        assert!(
            rows[2].contains(" 2 ") && rows[2].contains("12.2"),
            "{text}"
        );
        assert!(!text.contains("web01"), "names only with -v: {text}");
        let verbose = status_text_verbose(&status);
        assert_clean(&verbose, verbose.lines().count());
        assert!(
            verbose.contains(&format!("  mgr-b: web01, web{FORGE_SHOWN}\n")),
            "{verbose}"
        );
        assert!(verbose.contains("  mgr-a: -\n"), "{verbose}");
        let json = status_json(&status);
        assert_eq!(json["manager"], "mgr-b");
        assert_eq!(json["managers"][0]["state"], "dead");
        assert_eq!(json["managers"][1]["agents"][0], "web01");
    }

    #[test]
    fn the_agents_listings_name_their_manager() {
        let mut list = list();
        list.agents[0].manager = "mgr-b".into();
        let mut offline = list.agents[0].clone();
        offline.id = "084".into();
        offline.manager.clear();
        list.agents.push(offline);
        let table = agents_table(&list);
        assert!(
            table.lines().next().unwrap().contains(" MANAGER "),
            "{table}"
        );
        assert!(table.contains(" mgr-b "), "{table}");
        let json = agents_json(&list);
        assert_eq!(json[0]["manager"], "mgr-b");
        assert_eq!(json[1]["manager"], Value::Null);
        let control = agent_control_json(&list, false);
        assert_eq!(control["response"][0]["manager"], "mgr-b");
        assert!(control["response"][1].get("manager").is_none());
        // agent_control's text layout is unchanged.
        assert!(!agent_control_list(&list, false, false).contains("mgr-b"));
    }

    #[test]
    fn alert_fields_cannot_forge_rows_or_sequences() {
        let alert = Alert {
            id: "7".into(),
            agent_id: "083".into(),
            agent_name: format!("web{FORGE}"),
            rule_id: 5716,
            level: 5,
            srcip: format!("1.2.3.4{FORGE}"),
            description: format!("sshd{FORGE}"),
            location: format!("/var/log/auth.log{FORGE}"),
            log: vec![format!("line{FORGE}").into_bytes()],
            ..Default::default()
        };
        let table = alerts_table(std::slice::from_ref(&alert));
        assert_clean(&table, 2);
        assert!(table.contains(&format!("sshd{FORGE_SHOWN}")));
        let line = alert_line(&alert);
        // The tabs are the separators; the fields' own are escaped.
        assert_clean(&line.replace('\t', " "), 1);
        assert_eq!(line.matches('\t').count(), ALERT_HEADER.len() - 1);
        let json = json_line(&alert_json(&alert));
        assert_clean(&json, 1);
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["log"][0], format!("line{FORGE}"));
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
