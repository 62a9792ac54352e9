//! `decoder.xml` semantics, as OSSEC 3.x loads (`decode-xml.c`,
//! `decoders_list.c`) and runs (`decoder.c:DecodeEvent`) them; spec 4.
//!
//! Decoders are kept in two parent lists, as in OSSEC: those with a
//! `program_name` matcher and those without. An event that has a program
//! name is only tried against the first list, any other event only against
//! the second. The first parent whose program name and prematch match ends
//! the search, even if none of its children or its regex then match; file
//! order therefore decides. Children are tried in file order; same-name
//! children under one parent form a "get_next" chain whose regexes all run.
//! A child is reported under its parent's name (and id) unless it has
//! `use_own_name`, but it keeps its own `type`.
//!
//! Loading collects every validation error (spec 4.1) with file and line
//! instead of stopping at the first, and never panics.
//!
//! Knowing differences: `accumulate` is accepted but multi-line
//! accumulation is not performed; OSSEC's fixed size limits on pattern
//! fragments and on the number of `order` fields are not enforced; a decoder
//! that mixes the OS_Regex and PCRE2 forms of the same element is rejected.
//!
//! Submodules: `load` (decoder XML to the two parent lists, with every
//! validation of spec 4.1), `decode` (the `DecodeEvent` walk and the field
//! assignments), [`plugins`] (the compiled C plugin decoders), `json`
//! (Wazuh's `JSON_Decoder`).

mod decode;
mod json;
mod load;
pub mod plugins;

use crate::dialect::RulesetDialect;
use crate::event::{Category, Event, FieldName};
use crate::pattern::Pattern;

/// Where a decoder's `regex` starts matching (`offset` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegexOffset {
    /// From the start of `log`.
    #[default]
    None,
    /// After the parent's prematch (`after_parent`).
    AfterParent,
    /// After this decoder's own prematch (`after_prematch`).
    AfterPrematch,
    /// After the previous regex of a get_next chain (`after_regex`).
    AfterRegex,
}

/// The compiled C plugin decoders OSSEC offers through `<plugin_decoder>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `PF_Decoder`: OpenBSD pf logs.
    Pf,
    /// `SymantecWS_Decoder`: Symantec Web Security.
    SymantecWs,
    /// `SonicWall_Decoder`: SonicWall firewall.
    SonicWall,
    /// `OSSECAlert_Decoder`: OSSEC alerts forwarded by syslog.
    OssecAlert,
    /// `JSON_Decoder` (Wazuh): every key of a JSON object becomes a field.
    Json,
}

/// What `JSON_Decoder` does with a `null` (Wazuh `<json_null_field>`).
/// Wazuh's default is `string`: its own rules match `null` with `\w+`
/// (gitlab's 65610), and only the decoders that want otherwise say
/// `discard`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonNull {
    /// The key is left out (`discard`).
    Discard,
    /// The field is set empty (`empty`).
    Empty,
    /// The field is set to `null` (`string`), the default.
    #[default]
    String,
}

/// One `<decoder>` block after validation.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The name written in the file.
    pub own_name: String,
    /// The name events report: the parent's unless `use_own_name`.
    pub name: String,
    /// The `parent` element, if any.
    pub parent: Option<String>,
    /// `program_name` / `program_name_pcre2`.
    pub program_name: Option<Pattern>,
    /// `prematch` / `prematch_pcre2`.
    pub prematch: Option<Pattern>,
    /// Prematch `offset="after_parent"`.
    pub prematch_after_parent: bool,
    /// `regex` / `pcre2`, fragments concatenated.
    pub regex: Option<Pattern>,
    /// The regex offset.
    pub regex_offset: RegexOffset,
    /// The `order` fields, in capture order.
    pub order: Vec<FieldName>,
    /// The `fts` field names, trimmed.
    pub fts: Vec<String>,
    /// `type` (OSSEC event category).
    pub category: Category,
    /// `use_own_name` is `true`.
    pub use_own_name: bool,
    /// `plugin_decoder`.
    pub plugin: Option<Plugin>,
    /// Where the plugin starts reading (`offset` of `plugin_decoder`, Wazuh).
    pub plugin_offset: RegexOffset,
    /// `json_null_field` (Wazuh).
    pub json_null: JsonNull,
    /// `accumulate` was given (accepted, not acted upon).
    pub accumulate: bool,
    /// This block continues into the next sibling (same-name chain).
    pub get_next: bool,
    /// File the block came from.
    pub file: String,
    /// Line of the `<decoder>` element.
    pub line: usize,
}

#[derive(Debug, Clone)]
struct Node {
    dec: usize,
    children: Vec<usize>,
}

/// What `decode` did, for `ossec-logtest`'s Phase 2 output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeTrace {
    /// Name of the parent decoder that matched (what logtest prints as
    /// `decoder:`), `None` when no decoder matched.
    pub parent_name: Option<String>,
    /// Every field assignment in order, with OSSEC's logtest label
    /// (`proto` for protocol, `extra_data` for data).
    pub assigned: Vec<(String, String)>,
}

/// All decoders of one ruleset, ready to decode events.
#[derive(Debug, Clone, Default)]
pub struct DecoderSet {
    decoders: Vec<Decoder>,
    with_pname: Vec<Node>,
    without_pname: Vec<Node>,
    /// For each first byte of `log`: the positions in `without_pname` of
    /// the parents whose prematch can match a log starting with it (or
    /// that have no such bound), in file order. An access-log line is
    /// otherwise tried against every prematch-only parent before its own
    /// (15 in OSSEC 3.3.0); here most are skipped on one table lookup.
    without_by_first: Vec<Vec<usize>>,
    /// The rule language the decoders were read in.
    dialect: RulesetDialect,
}

impl DecoderSet {
    /// Every decoder block, in load order.
    pub fn decoders(&self) -> &[Decoder] {
        &self.decoders
    }

    /// Whether any parent decoder is tried for `event` (with a program name:
    /// the program_name list, else the other). `ossec-logtest` prints its
    /// Phase 2 only then.
    pub fn has_list_for(&self, event: &Event) -> bool {
        if event.program_name.is_some() {
            !self.with_pname.is_empty()
        } else {
            !self.without_pname.is_empty()
        }
    }

    /// The rule language the decoders were read in.
    pub fn dialect(&self) -> RulesetDialect {
        self.dialect
    }

    /// Whether any decoder reports `name` (for rule `decoded_as`).
    pub fn has_name(&self, name: &str) -> bool {
        self.decoders.iter().any(|d| d.name == name)
    }
}
