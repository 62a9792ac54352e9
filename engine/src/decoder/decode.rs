//! Decoding one event (`decoder.c:DecodeEvent`): the walk over the parent
//! list the event belongs to, its children and get_next chains, and the
//! assignment of captured values to the event's fields. The hot path
//! allocates nothing but the field values.

use super::{DecodeTrace, DecoderSet, Node, Plugin, RegexOffset, json, plugins};
use crate::event::{Category, Event, FieldName};

impl DecoderSet {
    /// Decodes `event` in place: decoder names, category and fields. The
    /// hot path: captured values go straight into `event.fields`, nothing
    /// is recorded for logtest.
    pub fn decode(&self, event: &mut Event) {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.decode_with(event, &mut scratch, None),
            Err(_) => self.decode_with(event, &mut Scratch::default(), None),
        });
    }

    /// Decodes `event` and reports what logtest prints for Phase 2.
    pub fn decode_traced(&self, event: &mut Event) -> DecodeTrace {
        let mut trace = DecodeTrace::default();
        self.decode_with(event, &mut Scratch::default(), Some(&mut trace));
        trace
    }

    fn decode_with(
        &self,
        event: &mut Event,
        scratch: &mut Scratch,
        trace: Option<&mut DecodeTrace>,
    ) {
        event.decoder_name = None;
        event.decoder_own_name = None;
        event.decoder_parent = None;
        event.category = Category::Syslog;
        scratch.assigned.clear();
        let outcome = {
            let log = event.log();
            if event.program_name.is_some() {
                self.run(
                    self.with_pname.iter(),
                    event.program_name.as_deref(),
                    log,
                    scratch,
                )
            } else {
                match log
                    .first()
                    .and_then(|&b| self.without_by_first.get(usize::from(b)))
                {
                    Some(candidates) => self.run(
                        candidates.iter().filter_map(|&i| self.without_pname.get(i)),
                        None,
                        log,
                        scratch,
                    ),
                    None => self.run(self.without_pname.iter(), None, log, scratch),
                }
            }
        };
        let Some((parent, info, plugin)) = outcome else {
            return;
        };
        let plugin = plugin.map(|(p, start)| (p, start, self.decoders[info].json_null));
        let d = &self.decoders[info];
        event.decoder_name = Some(d.name.clone());
        event.decoder_own_name = Some(d.own_name.clone());
        if self.dialect().is_wazuh() && info != parent {
            event.decoder_parent = Some(self.decoders[parent].name.clone());
        }
        event.category = d.category;
        let log_start = event.log_range().start;
        let mut trace = trace;
        if let Some(t) = trace.as_deref_mut() {
            t.parent_name = Some(self.decoders[parent].own_name.clone());
        }
        for &(dec, k, s, e) in &scratch.assigned {
            let Some(field) = self.decoders[dec].order.get(k) else {
                continue;
            };
            let bytes = event
                .full_log
                .get(log_start + s..log_start + e)
                .unwrap_or_default();
            let value = bytes_to_string(bytes);
            if let Some(t) = trace.as_deref_mut() {
                t.assigned.push((label(field), value.clone()));
            }
            event.fields.set(field, value);
        }
        match plugin {
            Some((Plugin::Json, start, nulls)) => {
                let assigned = json::decode(event, start, nulls);
                if let Some(t) = trace {
                    t.assigned.extend(assigned);
                }
            }
            // OSSEC's plugins print nothing in logtest.
            Some((p, _, _)) => plugins::run(p, event),
            None => {}
        }
    }

    /// The matching walk of `DecodeEvent`. Returns (parent, decoder_info,
    /// plugin to run, where in `log` it starts) and leaves the field assignments, as (decoder,
    /// `order` index, byte range in `log`), in `scratch.assigned`.
    fn run<'n>(
        &self,
        list: impl Iterator<Item = &'n Node>,
        program_name: Option<&str>,
        log: &[u8],
        scratch: &mut Scratch,
    ) -> Option<(usize, usize, Option<PluginAt>)> {
        for node in list {
            let p = &self.decoders[node.dec];
            let mut pmatch = 0;
            if let Some(pn) = program_name {
                match &p.program_name {
                    Some(m) if m.is_match(pn.as_bytes()) => {}
                    _ => continue,
                }
            }
            if let Some(pre) = &p.prematch {
                match pre.find_span(log) {
                    Some((_, end)) => pmatch = end,
                    None => continue,
                }
            }
            let mut info = node.dec;
            // The decoder whose regex runs first, its index in the child
            // list (None for a childless parent), and the prematch end.
            let (first, mut pos, cmatch) = if node.children.is_empty() {
                (node.dec, None, pmatch)
            } else {
                let mut i = 0;
                let mut picked = None;
                while i < node.children.len() {
                    let c = node.children[i];
                    let cd = &self.decoders[c];
                    match &cd.prematch {
                        Some(pre) => {
                            let base = if cd.prematch_after_parent { pmatch } else { 0 };
                            if let Some((_, end)) = pre.find_span(&log[base..]) {
                                info = c;
                                picked = Some((i, base + end));
                                break;
                            }
                        }
                        None => {
                            picked = Some((i, pmatch));
                            break;
                        }
                    }
                    if cd.get_next {
                        // Skip the rest of this chain.
                        while i < node.children.len() && self.decoders[node.children[i]].get_next {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                match picked {
                    Some((i, cm)) => (node.children[i], Some(i), cm),
                    None => return Some((node.dec, info, None)),
                }
            };
            let mut cur = first;
            if let Some(plugin) = self.decoders[cur].plugin {
                let start = match self.decoders[cur].plugin_offset {
                    RegexOffset::AfterParent => pmatch,
                    RegexOffset::AfterPrematch => cmatch,
                    RegexOffset::None | RegexOffset::AfterRegex => 0,
                };
                return Some((node.dec, info, Some((plugin, start))));
            }
            let mut regex_prev: Option<usize> = None;
            loop {
                let d = &self.decoders[cur];
                let Some(re) = &d.regex else { break };
                let base = match d.regex_offset {
                    RegexOffset::None => 0,
                    RegexOffset::AfterParent => pmatch,
                    RegexOffset::AfterPrematch => cmatch,
                    RegexOffset::AfterRegex => regex_prev.unwrap_or(cmatch),
                };
                let hay = &log[base..];
                match re.find_into(hay, &mut scratch.groups) {
                    None => regex_prev = None,
                    Some((_, end)) => {
                        info = cur;
                        regex_prev = Some(base + end);
                        // Extra captures beyond `order` are dropped.
                        let n = d.order.len();
                        for (k, r) in scratch.groups.iter().flatten().take(n).enumerate() {
                            scratch
                                .assigned
                                .push((cur, k, base + r.start, base + r.end));
                        }
                    }
                }
                match pos {
                    Some(i) if d.get_next && i + 1 < node.children.len() => {
                        pos = Some(i + 1);
                        cur = node.children[i + 1];
                    }
                    _ => break,
                }
            }
            return Some((node.dec, info, None));
        }
        None
    }
}

/// A plugin to run and the offset in `log` where it starts reading.
type PluginAt = (Plugin, usize);

/// Per-thread buffers of the decoding walk, reused from event to event.
#[derive(Default)]
struct Scratch {
    /// Capture groups of the last regex.
    groups: Vec<Option<std::ops::Range<usize>>>,
    /// (decoder, `order` index, start, end in `log`).
    assigned: Vec<(usize, usize, usize, usize)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// A decoded value: the bytes as text, invalid UTF-8 replaced.
fn bytes_to_string(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// The label `ossec-logtest` prints for a field (`decoder.c` `*_FP`).
fn label(f: &FieldName) -> String {
    match f {
        FieldName::SrcIp => "srcip",
        FieldName::DstIp => "dstip",
        FieldName::SrcPort => "srcport",
        FieldName::DstPort => "dstport",
        FieldName::Protocol => "proto",
        FieldName::Action => "action",
        FieldName::SrcUser => "srcuser",
        FieldName::DstUser => "dstuser",
        FieldName::Id => "id",
        FieldName::Url => "url",
        FieldName::Data => "extra_data",
        FieldName::Status => "status",
        FieldName::SystemName => "system_name",
        FieldName::Filename => "filename",
        FieldName::Dynamic(n) => return n.clone(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LoadErrors;

    fn load(xml: &str) -> Result<DecoderSet, LoadErrors> {
        DecoderSet::load(&[("d.xml".into(), xml.into())])
    }

    fn ev(log: &str, program: Option<&str>) -> Event {
        Event {
            full_log: log.as_bytes().to_vec(),
            program_name: program.map(str::to_string),
            ..Event::default()
        }
    }

    #[test]
    fn first_byte_index_keeps_file_order() {
        let xml = r#"
<decoder name="digits"><prematch>^\d+ x</prematch></decoder>
<decoder name="lit"><prematch>^Abc|^zz</prematch></decoder>
<decoder name="anywhere"><prematch>needle</prematch></decoder>
<decoder name="suffix"><prematch>end$</prematch></decoder>
<decoder name="late-digits"><prematch>^\d</prematch></decoder>
"#;
        let set = load(xml).unwrap();
        let name = |log: &str| {
            let mut e = ev(log, None);
            set.decode(&mut e);
            e.decoder_name
        };
        assert_eq!(name("12 x").as_deref(), Some("digits"));
        assert_eq!(name("12 y").as_deref(), Some("late-digits"));
        assert_eq!(name("abcd").as_deref(), Some("lit"));
        assert_eq!(name("ZZ top").as_deref(), Some("lit"));
        assert_eq!(name("1 needle").as_deref(), Some("anywhere"));
        assert_eq!(name("q the end").as_deref(), Some("suffix"));
        assert_eq!(name("q"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn lists_children_chains_and_names() {
        let xml = r#"
<decoder name="app"><program_name>^app</program_name></decoder>
<decoder name="app-kv"><parent>app</parent><prematch>^kv: </prematch>
  <regex offset="after_prematch">^user=(\S+) </regex><order>user</order></decoder>
<decoder name="app-kv"><parent>app</parent>
  <regex offset="after_regex">^ip=(\S+)</regex><order>srcip</order></decoder>
<decoder name="app-own"><parent>app</parent><use_own_name>true</use_own_name>
  <prematch>^own</prematch><type>firewall</type></decoder>
<decoder name="bare"><prematch>^GET </prematch><type>web-log</type></decoder>
"#;
        let set = load(xml).unwrap();
        let mut e = ev("kv: user=bob ip=1.2.3.4", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.decoder_name.as_deref(), Some("app"));
        assert_eq!(e.decoder_own_name.as_deref(), Some("app-kv"));
        assert_eq!(e.fields.dstuser.as_deref(), Some("bob"));
        assert_eq!(e.fields.srcip.as_deref(), Some("1.2.3.4"));
        // A failing first link does not stop the chain; after_regex then
        // restarts at the prematch end.
        let mut e = ev("kv: ip=9.9.9.9", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.fields.dstuser, None);
        assert_eq!(e.fields.srcip.as_deref(), Some("9.9.9.9"));
        let mut e = ev("own", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.decoder_name.as_deref(), Some("app-own"));
        assert_eq!(e.category, Category::Firewall);
        // A line with a program name never reaches the prematch-only list.
        let mut e = ev("GET /", Some("x"));
        set.decode(&mut e);
        assert_eq!(e.decoder_name, None);
        let mut e = ev("GET /", None);
        set.decode(&mut e);
        assert_eq!(e.decoder_name.as_deref(), Some("bare"));
        assert_eq!(e.category, Category::WebLog);
        // Parent matched, no child: decoded as the parent, no fields.
        let mut e = ev("nothing", Some("app"));
        set.decode(&mut e);
        assert_eq!(e.decoder_own_name.as_deref(), Some("app"));
        assert_eq!(e.fields, Default::default());
    }
}
