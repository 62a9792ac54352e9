//! MITRE ATT&CK technique names and tactics, for the `rule.mitre` object
//! of alerts.json in Wazuh's shape: a Wazuh rule names techniques by id
//! (`<mitre><id>T1110</id></mitre>`) and Wazuh's analysisd looks each up
//! in its ATT&CK database to print the technique's name and its tactics.
//! The table is ATT&CK's enterprise matrix (`data/mitre-attack.tsv`,
//! made by `scripts/gen-mitre-attack-table.py`), compiled in so that no
//! database has to be installed beside the manager.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("../data/mitre-attack.tsv");

/// One ATT&CK technique (or sub-technique).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    /// The technique's name (`Brute Force`; a sub-technique's own name,
    /// `Password Guessing` for T1110.001, as Wazuh prints it).
    pub name: &'static str,
    /// Its tactics' names (`Credential Access`), in ATT&CK's order.
    pub tactics: &'static str,
}

impl Technique {
    /// The tactic names one by one.
    pub fn tactic_list(&self) -> impl Iterator<Item = &'static str> {
        self.tactics.split(',').filter(|t| !t.is_empty())
    }
}

fn table() -> &'static HashMap<&'static str, Technique> {
    static TABLE_BY_ID: OnceLock<HashMap<&'static str, Technique>> = OnceLock::new();
    TABLE_BY_ID.get_or_init(|| {
        TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let id = cols.next()?;
                let name = cols.next()?;
                let tactics = cols.next().unwrap_or("");
                Some((id, Technique { name, tactics }))
            })
            .collect()
    })
}

/// The technique `id` names (`T1110`, `T1110.001`), if ATT&CK has it.
pub fn technique(id: &str) -> Option<Technique> {
    table().get(id).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques_resolve_to_their_name_and_tactics() {
        let t = technique("T1110").unwrap();
        assert_eq!(t.name, "Brute Force");
        assert_eq!(t.tactic_list().collect::<Vec<_>>(), ["Credential Access"]);
        let sub = technique("T1110.001").unwrap();
        assert_eq!(sub.name, "Password Guessing");
        let c2 = technique("T1071").unwrap();
        assert_eq!(
            c2.tactic_list().collect::<Vec<_>>(),
            ["Command and Control"]
        );
        assert!(technique("T99999").is_none());
        assert!(technique("TA0011").is_none(), "a tactic, not a technique");
        assert!(technique("").is_none());
    }

    #[test]
    fn every_technique_of_wazuhs_ruleset_is_known() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/wazuh/ruleset/rules");
        let mut ids = 0;
        for entry in std::fs::read_dir(&dir).expect("the Wazuh corpus in ../shared") {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for part in text.split("<id>").skip(1) {
                let id = part.split("</id>").next().unwrap().trim();
                // Technique ids; a few rules name a tactic (TA0011) there,
                // which Wazuh's technique database lacks too.
                if id.starts_with('T') && !id.starts_with("TA") {
                    ids += 1;
                    assert!(technique(id).is_some(), "{id} is not in the table");
                }
            }
        }
        assert!(ids > 100, "{ids} technique ids found");
    }
}
