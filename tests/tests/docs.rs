//! The documentation shows only what exists: every `palisade-manager`,
//! `palisade-agent` and `palisadectl` command line in a shell block of the
//! READMEs and `docs/` parses with the real command-line definitions, every
//! `cargo ... -p PACKAGE` names a package of this workspace, and every TOML
//! block uses only known sections and keys. (It needs all three programs'
//! definitions, so it lives here rather than in one of their crates.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = vec![root.join("README.md"), root.join("deploy/README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    docs
}

/// (language, first line number, text) of every fenced block; indented
/// blocks count as shell.
fn blocks(text: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => current = Some((rest.trim().to_string(), i + 2, String::new())),
            }
            continue;
        }
        if let Some((_, _, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        } else if let Some(cmd) = line.strip_prefix("    ") {
            out.push(("sh".into(), i + 1, format!("{cmd}\n")));
        }
    }
    out
}

/// The argv of a documented command: shell words up to a comment, pipe or
/// redirection.
fn argv(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    for w in line.split_whitespace() {
        if w.starts_with('#') || w == "|" || w == ">>" || w == ">" || w == "&&" {
            break;
        }
        words.push(w.trim_matches('\'').to_string());
    }
    words
}

#[test]
fn documented_commands_parse() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (lang, line_no, body) in blocks(&text) {
            if !(lang.is_empty() || lang == "sh") {
                continue;
            }
            for (k, line) in body.lines().enumerate() {
                let words = argv(line.trim());
                let Some(program) = words.first() else {
                    continue;
                };
                let result = match program.as_str() {
                    "palisade-manager" => palisade_manager::cli::check_args(&words),
                    "palisade-agent" => palisade_agent::cli::check_args(&words),
                    "palisadectl" => palisadectl::cli::check_args(&words),
                    _ => continue,
                };
                checked += 1;
                if let Err(e) = result {
                    failures.push(format!("{}:{}: {line}\n{e}", doc.display(), line_no + k));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} documented commands found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The packages of the workspace, by name.
fn workspace_packages() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            let text =
                std::fs::read_to_string(root.join(member.as_str().unwrap()).join("Cargo.toml"))
                    .unwrap();
            let package: toml::Table = text.parse().unwrap();
            package["package"]["name"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn documented_cargo_commands_name_real_packages() {
    let packages = workspace_packages();
    assert!(packages.iter().any(|p| p == "palisade-quickstart"));
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (lang, line_no, body) in blocks(&text) {
            if !(lang.is_empty() || lang == "sh") {
                continue;
            }
            for (k, line) in body.lines().enumerate() {
                let words = argv(line.trim());
                if words.first().map(String::as_str) != Some("cargo") {
                    continue;
                }
                for pair in words.windows(2).filter(|w| w[0] == "-p") {
                    checked += 1;
                    assert!(
                        packages.contains(&pair[1]),
                        "{}:{}: no package {:?} in the workspace ({packages:?})",
                        doc.display(),
                        line_no + k,
                        pair[1]
                    );
                }
            }
        }
    }
    assert!(checked >= 1, "the README's first command names no package");
}

#[test]
fn documented_toml_uses_known_keys() {
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (lang, line_no, body) in blocks(&text) {
            if lang != "toml" {
                continue;
            }
            checked += 1;
            // `[manager]` with an `address` is the agent's table
            // (agent.toml); the rest, manager.toml's `[manager]` (its
            // name among several managers) included, is manager.toml.
            let agent_toml = body.lines().any(|l| l.trim() == "[manager]")
                && body.lines().any(|l| l.trim_start().starts_with("address"));
            let checked_body = if agent_toml {
                let file = format!("{body}\n[[localfile]]\nlocation = \"/x\"\n");
                palisade_agent::AgentConfig::parse(&file, Path::new("agent.toml"))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                palisade_manager::config::check_keys(&body).map_err(|e| e.to_string())
            };
            if let Err(e) = checked_body {
                panic!("{}:{line_no}: {e}\n{body}", doc.display());
            }
        }
    }
    assert!(checked >= 2, "only {checked} TOML blocks found");
}
