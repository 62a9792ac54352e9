//! `palisade-manager import-ossec ossec.conf`: the `[global] white_list`,
//! `[[command]]` and `[[active_response]]` sections equivalent to an OSSEC
//! configuration's `<global><white_list>`, `<command>` and
//! `<active-response>` blocks, printed as TOML, or merged into an existing
//! manager.toml with `--into` ([`merge_into`]).
//!
//! OSSEC's stock scripts (`route-null.sh`, `firewall-drop.sh`,
//! `host-deny.sh`) become Palisade's built-ins; any other executable stays a
//! script under `/var/ossec/active-response/bin/`. What cannot be carried
//! over is said in a comment, never dropped silently.

use std::fmt::Write as _;

use palisade_engine::xml::{self, Element};

use crate::config::BUILTIN_COMMANDS;

/// Where OSSEC keeps its response scripts.
const OSSEC_AR_BIN: &str = "/var/ossec/active-response/bin";

fn child_text<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.children
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.text.trim())
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn elements<'a>(roots: &'a [Element], name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
    roots.iter().flat_map(move |root| {
        let top = (root.name == name).then_some(root);
        top.into_iter()
            .chain(root.children.iter().filter(move |c| c.name == name))
    })
}

/// Converts the text of an ossec.conf; `Err` when it is not readable XML.
pub fn convert(source_name: &str, text: &str) -> Result<String, String> {
    let roots = xml::parse(text).map_err(|e| format!("{source_name}: {e}"))?;
    let mut out = format!("# Converted from {source_name} by palisade-manager import-ossec.\n");

    let white: Vec<String> = elements(&roots, "global")
        .flat_map(|g| {
            g.children
                .iter()
                .filter(|c| c.name == "white_list" || c.name == "allow_list")
        })
        .map(|w| w.text.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    out.push_str("\n[global]\n");
    for w in &white {
        if palisade_common::network::parse_network(w).is_err() {
            let _ = writeln!(
                out,
                "# {w:?} is not an address or CIDR (OSSEC would treat it as a host name); left out."
            );
        }
    }
    let valid: Vec<String> = white
        .into_iter()
        .filter(|w| palisade_common::network::parse_network(w).is_ok())
        .collect();
    let _ = writeln!(out, "white_list = {}", list(&valid));

    let mut names = Vec::new();
    for c in elements(&roots, "command") {
        let Some(name) = child_text(c, "name") else {
            out.push_str("\n# A <command> without <name> was left out.\n");
            continue;
        };
        let exe = child_text(c, "executable").unwrap_or(name);
        let stem = exe
            .strip_suffix(".sh")
            .or_else(|| exe.strip_suffix(".cmd"))
            .unwrap_or(exe);
        let executable = if BUILTIN_COMMANDS.contains(&stem) {
            stem.to_string()
        } else if exe.starts_with('/') {
            exe.to_string()
        } else {
            format!("{OSSEC_AR_BIN}/{exe}")
        };
        let expect: Vec<String> = child_text(c, "expect")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        let timeout_allowed =
            child_text(c, "timeout_allowed").is_some_and(|t| t.eq_ignore_ascii_case("yes"));
        let _ = writeln!(
            out,
            "\n[[command]]\nname = {}\nexecutable = {}",
            quote(name),
            quote(&executable)
        );
        let _ = writeln!(
            out,
            "expect = {}\ntimeout_allowed = {timeout_allowed}",
            list(&expect)
        );
        names.push(name.to_string());
    }

    for ar in elements(&roots, "active-response") {
        let Some(command) = child_text(ar, "command") else {
            // Agent-side blocks (repeated_offenders alone) carry no command.
            if let Some(ro) = child_text(ar, "repeated_offenders") {
                let _ = writeln!(
                    out,
                    "\n# An agent-side <repeated_offenders>{ro}</repeated_offenders>: set repeated_offenders on the [[active_response]] blocks above."
                );
            }
            continue;
        };
        out.push_str("\n[[active_response]]\n");
        let _ = writeln!(out, "command = {}", quote(command));
        if !names.iter().any(|n| n == command) && !BUILTIN_COMMANDS.contains(&command) {
            let _ = writeln!(
                out,
                "# No <command> named {command:?} was found in this file."
            );
        }
        let location = child_text(ar, "location")
            .unwrap_or("local")
            .to_ascii_lowercase();
        let location = if location.contains("defined-agent") {
            "defined-agent"
        } else if location.contains("all") || location.contains("any") {
            "all"
        } else if location.contains("local") {
            "local"
        } else {
            "server"
        };
        let _ = writeln!(out, "location = {}", quote(location));
        if let Some(id) = child_text(ar, "agent_id") {
            let _ = writeln!(out, "agent_id = {}", quote(id));
        }
        if let Some(ids) = child_text(ar, "rules_id") {
            let ids: Vec<&str> = ids
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let _ = writeln!(out, "rules_id = [{}]", ids.join(", "));
        }
        if let Some(group) = child_text(ar, "rules_group") {
            let _ = writeln!(out, "rules_group = {}", quote(group));
        }
        if let Some(level) = child_text(ar, "level") {
            let _ = writeln!(out, "level = {level}");
        }
        match child_text(ar, "timeout").map(str::parse::<u64>) {
            Some(Ok(0)) | None => {}
            Some(Ok(s)) => {
                let _ = writeln!(out, "timeout = \"{s}s\"");
            }
            Some(Err(_)) => {
                let _ = writeln!(out, "# <timeout> is not a number of seconds; left out.");
            }
        }
        if let Some(ro) = child_text(ar, "repeated_offenders") {
            let minutes: Vec<String> = ro
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|m| format!("{m}m"))
                .collect();
            let _ = writeln!(out, "repeated_offenders = {}", list(&minutes));
        }
        if child_text(ar, "disabled").is_some_and(|d| d.eq_ignore_ascii_case("yes")) {
            out.push_str("disabled = true\n");
        }
    }
    Ok(out)
}

/// Merges converted TOML into an existing manager.toml's text, keeping its
/// comments and layout: white-list entries are added to `[global]` (each
/// once), `[[command]]` blocks whose name is already defined and
/// `[[active_response]]` blocks identical to an existing one are left out.
/// Returns the new text and what was added.
pub fn merge_into(existing: &str, imported: &str) -> Result<(String, Vec<String>), String> {
    use toml_edit::{Array, DocumentMut, Item, Value};
    let mut doc: DocumentMut = existing
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("the existing file: {e}"))?;
    let new: DocumentMut = imported
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("the converted text: {e}"))?;
    let mut added = Vec::new();

    if let Some(list) = new
        .get("global")
        .and_then(|g| g.get("white_list"))
        .and_then(Item::as_array)
    {
        let global = doc
            .entry("global")
            .or_insert_with(toml_edit::table)
            .as_table_like_mut()
            .ok_or("the existing [global] is not a table")?;
        let current = global
            .entry("white_list")
            .or_insert(Item::Value(Value::Array(Array::new())))
            .as_array_mut()
            .ok_or("the existing global.white_list is not a list")?;
        for v in list.iter() {
            let Some(s) = v.as_str() else { continue };
            if !current.iter().any(|c| c.as_str() == Some(s)) {
                current.push(s);
                added.push(format!("white_list {s}"));
            }
        }
    }

    for (key, what) in [
        ("command", "command"),
        ("active_response", "active response"),
    ] {
        let Some(tables) = new.get(key).and_then(Item::as_array_of_tables) else {
            continue;
        };
        let existing_tables = doc
            .entry(key)
            .or_insert(Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
            .as_array_of_tables_mut()
            .ok_or_else(|| format!("the existing {key} is not a list of [[{key}]] blocks"))?;
        for table in tables.iter() {
            let same_name = |t: &toml_edit::Table| {
                key == "command"
                    && t.get("name").and_then(Item::as_str)
                        == table.get("name").and_then(Item::as_str)
            };
            let identical = |t: &toml_edit::Table| t.to_string() == table.to_string();
            if existing_tables.iter().any(|t| same_name(t) || identical(t)) {
                continue;
            }
            let label = table
                .get(if key == "command" { "name" } else { "command" })
                .and_then(Item::as_str)
                .unwrap_or("?");
            added.push(format!("{what} {label}"));
            existing_tables.push(table.clone());
        }
    }
    Ok((doc.to_string(), added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_file_and_adds_each_thing_once() {
        let existing = "# mine\n[server]\nlisten = \"127.0.0.1:1514\"\n\n[global]\n# keep\nwhite_list = [\"127.0.0.1\"]\n\n[[active_response]]\ncommand = \"route-null\"\nlocation = \"local\"\nrules_id = [31151]\ntimeout = \"600s\"\n";
        let conf = r#"<ossec_config>
  <global><white_list>127.0.0.1</white_list><white_list>10.0.0.0/8</white_list></global>
  <command><name>firewall-drop</name><executable>firewall-drop.sh</executable><expect>srcip</expect><timeout_allowed>yes</timeout_allowed></command>
  <active-response><command>firewall-drop</command><location>local</location><level>7</level><timeout>600</timeout></active-response>
</ossec_config>"#;
        let imported = convert("ossec.conf", conf).unwrap();
        let (merged, added) = merge_into(existing, &imported).unwrap();
        assert!(merged.starts_with("# mine\n"), "{merged}");
        assert!(merged.contains("# keep"), "{merged}");
        assert_eq!(
            added,
            [
                "white_list 10.0.0.0/8",
                "command firewall-drop",
                "active response firewall-drop"
            ]
        );
        let config =
            crate::config::ManagerConfig::parse(&merged, std::path::Path::new("m.toml")).unwrap();
        assert_eq!(config.white_list.len(), 2);
        assert_eq!(config.responses.len(), 2);
        // Merging the same file again adds nothing.
        let (again, added) = merge_into(&merged, &imported).unwrap();
        assert!(added.is_empty(), "{added:?}");
        assert_eq!(again, merged);
    }

    #[test]
    fn stock_blocks_become_builtins_and_the_result_is_valid() {
        let conf = r#"<ossec_config>
  <global>
    <white_list>127.0.0.1</white_list>
    <white_list>10.0.0.0/8</white_list>
  </global>
  <command>
    <name>route-null</name>
    <executable>route-null.sh</executable>
    <expect>srcip</expect>
    <timeout_allowed>yes</timeout_allowed>
  </command>
  <command>
    <name>notify</name>
    <executable>notify.sh</executable>
    <expect>srcip,user</expect>
  </command>
  <active-response>
    <command>route-null</command>
    <location>local</location>
    <rules_id>31151, 5712</rules_id>
    <timeout>600</timeout>
    <repeated_offenders>30,120</repeated_offenders>
  </active-response>
  <active-response>
    <disabled>yes</disabled>
    <command>notify</command>
    <location>defined-agent</location>
    <agent_id>083</agent_id>
    <level>10</level>
  </active-response>
</ossec_config>"#;
        let toml = convert("ossec.conf", conf).unwrap();
        assert!(toml.contains("executable = \"route-null\""), "{toml}");
        assert!(
            toml.contains("executable = \"/var/ossec/active-response/bin/notify.sh\""),
            "{toml}"
        );
        assert!(toml.contains("rules_id = [31151, 5712]"), "{toml}");
        assert!(
            toml.contains("repeated_offenders = [\"30m\", \"120m\"]"),
            "{toml}"
        );
        let full = format!("[server]\nlisten = \"127.0.0.1:1514\"\n{toml}");
        let config =
            crate::config::ManagerConfig::parse(&full, std::path::Path::new("m.toml")).unwrap();
        assert_eq!(
            config.responses.len(),
            1,
            "the disabled block is not enabled"
        );
        assert_eq!(config.responses[0].name, "route-null600");
        assert_eq!(config.white_list.len(), 2);
    }
}
