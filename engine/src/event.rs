//! The event model: one log line after pre-decoding and decoding, as OSSEC's
//! `Eventinfo` holds it. Decoders write the fields; rules read them.
//!
//! Every decoded value is a string, as in OSSEC (ports and status codes too).
//! Values are kept as bytes-derived `String`s with invalid UTF-8 replaced,
//! because patterns match on the raw bytes of `log` while fields are shown to
//! people.

use std::collections::BTreeMap;

use crate::dialect::RulesetDialect;

/// One event as the engine sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The line exactly as received (OSSEC `full_log`), control characters
    /// removed as OSSEC 3.8 does.
    pub full_log: Vec<u8>,
    /// The part after the syslog header that decoders and rules match
    /// (OSSEC `log`); a byte offset into `full_log`.
    pub log_offset: usize,
    /// Where `log` ends, when it stops before the end of `full_log` (only
    /// the OS X ASL `[Message ...]` form does that); `None` = the end.
    pub log_end: Option<usize>,
    /// Where the line came from: a file path, or `(agent) ip->path` for an
    /// agent's event.
    pub location: String,
    /// Host name from the syslog header, or the agent location for agent
    /// events, or the manager's host name.
    pub hostname: Option<String>,
    /// Program name from the syslog header (`sshd` in `sshd[123]:`).
    pub program_name: Option<String>,
    /// Timestamp text from the header, if one was recognised.
    pub header_time: Option<String>,
    /// Name of the decoder that matched (the parent's name unless the child
    /// has `use_own_name`); `None` when no decoder matched.
    pub decoder_name: Option<String>,
    /// The own name (as written in its file) of the decoder that matched,
    /// child or parent. Not what `ossec-logtest -U` compares: `-U` compares
    /// [`decoder_name`](Self::decoder_name), i.e. the parent's name unless
    /// the child has `use_own_name`. Used for the decoder's `<fts>` fields.
    pub decoder_own_name: Option<String>,
    /// The parent's name when a child decoder matched, in the Wazuh
    /// dialect only (alerts.json's `decoder.parent`).
    pub decoder_parent: Option<String>,
    /// Decoder `type`, OSSEC's event category (`syslog` by default).
    pub category: Category,
    /// Fields filled by the decoder's `order`.
    pub fields: Fields,
}

impl Event {
    /// The text decoders and rules match against (OSSEC `lf->log`).
    pub fn log(&self) -> &[u8] {
        &self.full_log[self.log_range()]
    }

    /// Where `log` lies in `full_log`.
    pub fn log_range(&self) -> std::ops::Range<usize> {
        let end = self
            .log_end
            .unwrap_or(self.full_log.len())
            .min(self.full_log.len());
        self.log_offset.min(end)..end
    }
}

/// OSSEC decoder `type`, the category that selects the top-level rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Category {
    /// `syslog`, the default.
    #[default]
    Syslog,
    /// `firewall`.
    Firewall,
    /// `ids`.
    Ids,
    /// `web-log`.
    WebLog,
    /// `squid`.
    Squid,
    /// `windows`.
    Windows,
    /// `host-information`.
    HostInformation,
    /// `ossec`.
    Ossec,
}

impl Category {
    /// Parses a decoder `type` or rule `category` value (exact, case-sensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "syslog" => Self::Syslog,
            "firewall" => Self::Firewall,
            "ids" => Self::Ids,
            "web-log" => Self::WebLog,
            "squid" => Self::Squid,
            "windows" => Self::Windows,
            "host-information" => Self::HostInformation,
            "ossec" => Self::Ossec,
            _ => return None,
        })
    }

    /// The name OSSEC uses for this category.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syslog => "syslog",
            Self::Firewall => "firewall",
            Self::Ids => "ids",
            Self::WebLog => "web-log",
            Self::Squid => "squid",
            Self::Windows => "windows",
            Self::HostInformation => "host-information",
            Self::Ossec => "ossec",
        }
    }
}

/// The decoded fields of an event (OSSEC 3.x field names, see
/// `ossec-semantics.md` 4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// `srcip`.
    pub srcip: Option<String>,
    /// `dstip`.
    pub dstip: Option<String>,
    /// `srcport`.
    pub srcport: Option<String>,
    /// `dstport`.
    pub dstport: Option<String>,
    /// `protocol`.
    pub protocol: Option<String>,
    /// `action`.
    pub action: Option<String>,
    /// `srcuser`.
    pub srcuser: Option<String>,
    /// `dstuser` (also written by `user`).
    pub dstuser: Option<String>,
    /// `id` (the HTTP status for web logs).
    pub id: Option<String>,
    /// `url`.
    pub url: Option<String>,
    /// `data` / `extra_data`.
    pub data: Option<String>,
    /// `status`.
    pub status: Option<String>,
    /// `system_name`.
    pub system_name: Option<String>,
    /// Any order name containing `filename`.
    pub filename: Option<String>,
    /// Every other `order` name (OSSEC 3.x dynamic fields), for `<field>`.
    pub dynamic: BTreeMap<String, String>,
}

/// Which static field an `order` name writes, or a dynamic one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldName {
    /// `srcip`
    SrcIp,
    /// `dstip`
    DstIp,
    /// `srcport`
    SrcPort,
    /// `dstport`
    DstPort,
    /// `protocol`
    Protocol,
    /// `action`
    Action,
    /// `srcuser`
    SrcUser,
    /// `dstuser` or `user`
    DstUser,
    /// `id`
    Id,
    /// `url`
    Url,
    /// `data` or `extra_data`
    Data,
    /// `status`
    Status,
    /// `system_name`
    SystemName,
    /// any name containing `filename`
    Filename,
    /// any other name
    Dynamic(String),
}

impl FieldName {
    /// Maps an `order` entry to the field it fills (OSSEC 3.x rules).
    pub fn parse(name: &str) -> Self {
        match name {
            "srcip" => Self::SrcIp,
            "dstip" => Self::DstIp,
            "srcport" => Self::SrcPort,
            "dstport" => Self::DstPort,
            "protocol" => Self::Protocol,
            "action" => Self::Action,
            "srcuser" => Self::SrcUser,
            "dstuser" | "user" => Self::DstUser,
            "id" => Self::Id,
            "url" => Self::Url,
            "data" | "extra_data" => Self::Data,
            "status" => Self::Status,
            "system_name" => Self::SystemName,
            n if n.contains("filename") => Self::Filename,
            n => Self::Dynamic(n.to_string()),
        }
    }
}

impl FieldName {
    /// [`FieldName::parse`] in a ruleset's dialect: Wazuh keeps `data`
    /// apart from `extra_data` (its own field, compared and matched on its
    /// own), where OSSEC takes both for one.
    pub fn parse_in(name: &str, dialect: RulesetDialect) -> Self {
        if dialect.is_wazuh() && name == "data" {
            return Self::Dynamic(name.to_string());
        }
        Self::parse(name)
    }
}

impl Fields {
    /// Writes one decoded value.
    pub fn set(&mut self, name: &FieldName, value: String) {
        let slot = match name {
            FieldName::SrcIp => &mut self.srcip,
            FieldName::DstIp => &mut self.dstip,
            FieldName::SrcPort => &mut self.srcport,
            FieldName::DstPort => &mut self.dstport,
            FieldName::Protocol => &mut self.protocol,
            FieldName::Action => &mut self.action,
            FieldName::SrcUser => &mut self.srcuser,
            FieldName::DstUser => &mut self.dstuser,
            FieldName::Id => &mut self.id,
            FieldName::Url => &mut self.url,
            FieldName::Data => &mut self.data,
            FieldName::Status => &mut self.status,
            FieldName::SystemName => &mut self.system_name,
            FieldName::Filename => &mut self.filename,
            FieldName::Dynamic(n) => {
                self.dynamic.insert(n.clone(), value);
                return;
            }
        };
        *slot = Some(value);
    }

    /// Reads one field by its `order` name.
    pub fn get(&self, name: &FieldName) -> Option<&str> {
        match name {
            FieldName::SrcIp => self.srcip.as_deref(),
            FieldName::DstIp => self.dstip.as_deref(),
            FieldName::SrcPort => self.srcport.as_deref(),
            FieldName::DstPort => self.dstport.as_deref(),
            FieldName::Protocol => self.protocol.as_deref(),
            FieldName::Action => self.action.as_deref(),
            FieldName::SrcUser => self.srcuser.as_deref(),
            FieldName::DstUser => self.dstuser.as_deref(),
            FieldName::Id => self.id.as_deref(),
            FieldName::Url => self.url.as_deref(),
            FieldName::Data => self.data.as_deref(),
            FieldName::Status => self.status.as_deref(),
            FieldName::SystemName => self.system_name.as_deref(),
            FieldName::Filename => self.filename.as_deref(),
            FieldName::Dynamic(n) => self.dynamic.get(n).map(String::as_str),
        }
    }
}
