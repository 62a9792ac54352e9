//! Correlation state: what OSSEC's frequency / `if_matched_*` rules search,
//! plus the other per-rule memory (`ignore`, `<ignore>` lists, first-time
//! seen, `check_diff`).
//!
//! OSSEC keeps, per `if_matched_sid` target, a list of the events that
//! *finally alerted* as that rule; per `if_matched_group` rule a list fed by
//! the rules whose groups match; and a global history of every alert (the
//! `if_matched_regex` search space). A search walks a list newest to oldest
//! and stops at the first event older than the timeframe or carrying a
//! barrier mark at least the searching rule's level; it fires when
//! `frequency + 1` earlier events pass the `same_*` filters, i.e. on the
//! `frequency + 2`-th event (Wazuh's dialect: on the `frequency`-th, see
//! [`crate::rule::Rule::fires_after`]) (`Search_LastSids`, `Search_LastGroups`,
//! `Search_LastEvents` in `src/analysisd/eventinfo.c`). Wazuh 4 tests the
//! barrier after the filters and marks only the current event and, when
//! more than one event was counted, the newest counted one: a ruleset read
//! in its dialect is searched that way, whatever [`Barrier`] says.
//!
//! Memory bound (why a flood of distinct source IPs cannot exhaust memory):
//! the only per-source state is the lists' address index, whose entries
//! are the list's own ids (an address key disappears with its last entry),
//! so it is bounded like the lists. Every stored event lives in one
//! arena whose size is capped by the global history (`memory_size`, OSSEC's
//! `<global><memory_size>`, default 8192): when the history is full the
//! oldest event is evicted from the arena and from the front of every list
//! that holds it, so each list is at most `memory_size` long, whatever the
//! number of sources. Lists are also trimmed by time when they grow (an
//! entry older than the longest timeframe of the rules reading that list
//! can never count again). The string-keyed memories (`<ignore>` list,
//! first-time-seen keys, `check_diff` outputs) are FIFO-bounded sets of
//! `key_cap` entries; OSSEC keeps those on disk without bound, so a key
//! evicted here may be "seen for the first time" again (documented
//! deviation, option [`CorrelateLimits::key_cap`]).
//!
//! After a panic (the manager contains one to the event that caused it):
//! every mutation here but [`Correlator::store`] is one step that leaves
//! the state valid whatever follows (a barrier mark, a first-time-seen or
//! ignore key, a `check_diff` output, an `ignore` time), as if the event
//! had been judged that far. `store` adds one event to the arena, the
//! history and the lists in several steps, which only allocate (an
//! allocation failure aborts, it does not unwind); should a panic ever cut
//! it anyway, [`Correlator::check_consistency`] finds the broken link and
//! the engine starts its correlation memory afresh
//! ([`crate::engine::Engine::recover_after_panic`]).
//!
//! Bytes as well as entries: the attacker writes the lines, and a few
//! hundred multi-megabyte lines once took the manager to gigabytes here.
//! Each stored event keeps ONE copy of its line, cut at
//! [`CorrelateLimits::event_bytes`] (the text `if_matched_regex` searches
//! and the "Portion of the log(s)" of a firing are read from it), and the
//! arena is also bounded by [`CorrelateLimits::memory_bytes`]: the oldest
//! events go first, as when the history is full. The string-keyed memories
//! are bounded by [`CorrelateLimits::key_bytes`] each, the same way.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::event::{Category, Event, Fields};
use crate::rule::{FilterField, RuleIdx, RuleSet, Search, StaticFilter};

/// Size limits of the correlation memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelateLimits {
    /// Global alert history (OSSEC `<global><memory_size>`, default 8192,
    /// minimum 2048 there; any value ≥ 1 here).
    pub memory_size: usize,
    /// Entries kept in each string-keyed memory (ignore list, FTS, diff).
    pub key_cap: usize,
    /// Bytes the stored events may take in all (their lines, fields and
    /// bookkeeping, estimated); the oldest are evicted beyond it.
    pub memory_bytes: usize,
    /// Bytes of a stored event's line kept; the rest is cut (the event
    /// counts for correlation as before; only the copy is shorter).
    pub event_bytes: usize,
    /// Bytes each string-keyed memory may take (ignore list, FTS, diff).
    pub key_bytes: usize,
}

/// [`CorrelateLimits::memory_bytes`] by default.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// [`CorrelateLimits::event_bytes`] by default.
pub const DEFAULT_EVENT_BYTES: usize = 16 << 10;
/// [`CorrelateLimits::key_bytes`] by default.
pub const DEFAULT_KEY_BYTES: usize = 16 << 20;

impl Default for CorrelateLimits {
    fn default() -> Self {
        Self {
            memory_size: 8192,
            key_cap: 65_536,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            event_bytes: DEFAULT_EVENT_BYTES,
            key_bytes: DEFAULT_KEY_BYTES,
        }
    }
}

/// What a stored string costs beside its bytes (allocation, `Option`).
const STRING_OVERHEAD: usize = 32;

/// How far a frequency rule's firing resets counting (OSSEC's "barrier").
///
/// OSSEC tests the barrier before the `same_*` filters and, on a firing,
/// marks the newest event of the list whoever sent it; so when many
/// sources interleave (a busy web server under several scans at once), one
/// address's firing restarts the count of every other address, and a
/// scanner whose burst straddles another's firing can go unflagged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Barrier {
    /// OSSEC 3.x: barrier tested before the filters; a firing marks the
    /// current event, the oldest counted event and the newest event of the
    /// list.
    #[default]
    Global,
    /// Palisade option (`barrier = "per-source"`): the barrier is tested
    /// after the `same_*` filters and a firing marks only events it
    /// counted (the oldest and the newest), so it restarts the count for
    /// the address (user, ...) it fired about and for no other. With one
    /// source the behaviour is OSSEC's: fires on events f+2, 2(f+2), ...
    PerSource,
}

/// What a context search needs from an earlier alert.
#[derive(Debug, Clone)]
struct Stored {
    time: i64,
    matched: u32,
    srcip: Option<String>,
    srcport: Option<String>,
    dstport: Option<String>,
    dstuser: Option<String>,
    id: Option<String>,
    hostname: Option<String>,
    url: Option<String>,
    category: Category,
    /// The event's `full_log`, cut at `event_bytes`: the one copy kept.
    line: Box<[u8]>,
    /// Where `log` lies in `line` (cut with it).
    log: std::ops::Range<usize>,
    /// Every field and the location, kept only when some rule has Wazuh
    /// static filters ([`RuleSet::keeps_fields`]).
    wide: Option<Box<(Fields, String)>>,
    /// The agent the event came from ([`agent_of`]), kept in the Wazuh
    /// dialect only (its searches count one agent's events); `None` for
    /// the manager's own.
    agent: Option<Box<str>>,
}

/// The agent named by an agent event's location (`(web01) ip->path`:
/// `web01`); empty for the manager's own events. Wazuh counts only the
/// current event's agent's earlier events unless `<global_frequency/>`.
fn agent_of(location: &str) -> &str {
    location
        .strip_prefix('(')
        .and_then(|rest| rest.split_once(") "))
        .map_or("", |(name, _)| name)
}

impl Stored {
    /// The text `if_matched_regex` searches (OSSEC `log`).
    fn log(&self) -> &[u8] {
        &self.line[self.log.clone()]
    }

    /// The line as an alert's "Portion of the log(s)" shows it.
    fn full_log(&self) -> String {
        // `from_utf8` has an ASCII fast path that the lossy decoder lacks.
        std::str::from_utf8(&self.line).map_or_else(
            |_| String::from_utf8_lossy(&self.line).into_owned(),
            str::to_owned,
        )
    }

    /// Bytes it takes, estimated: the line, the fields, the struct and its
    /// list entries.
    fn cost(&self) -> usize {
        let text = |v: &Option<String>| v.as_ref().map_or(0, |s| s.len() + STRING_OVERHEAD);
        std::mem::size_of::<Self>()
            + 64
            + self.line.len()
            + text(&self.srcip)
            + text(&self.srcport)
            + text(&self.dstport)
            + text(&self.dstuser)
            + text(&self.id)
            + text(&self.hostname)
            + text(&self.url)
            + self.agent.as_ref().map_or(0, |a| a.len() + STRING_OVERHEAD)
            + self.wide.as_deref().map_or(0, |(f, location)| {
                let statics = [
                    &f.srcip,
                    &f.dstip,
                    &f.srcport,
                    &f.dstport,
                    &f.protocol,
                    &f.action,
                    &f.srcuser,
                    &f.dstuser,
                    &f.id,
                    &f.url,
                    &f.data,
                    &f.status,
                    &f.system_name,
                    &f.filename,
                ];
                std::mem::size_of::<(Fields, String)>()
                    + location.len()
                    + statics.into_iter().map(text).sum::<usize>()
                    + f.dynamic
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 2 * STRING_OVERHEAD)
                        .sum::<usize>()
            })
    }
}

/// Cuts `bytes` to at most `max` bytes, at a UTF-8 boundary when the text
/// is UTF-8 there (so a cut line still reads as text).
pub fn cut_at(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    // Back off at most 3 continuation bytes to a character start.
    while end > 0 && max - end < 3 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    if (bytes[end] & 0xC0) == 0x80 {
        end = max;
    }
    &bytes[..end]
}

/// Whether an earlier event passes a rule's Wazuh static filters against
/// the current one (a field unknown on either side passes neither
/// `same_*` nor `different_*`; GeoIP is never known here).
fn static_filters_hold(filters: &[StaticFilter], ev: &Event, earlier: &(Fields, String)) -> bool {
    filters.iter().all(|flt| {
        let (now, then) = match &flt.field {
            FilterField::Field(name) => (ev.fields.get(name), earlier.0.get(name)),
            FilterField::Location => (Some(ev.location.as_str()), Some(earlier.1.as_str())),
            FilterField::SrcGeoip | FilterField::DstGeoip => (None, None),
        };
        match (now, then) {
            (Some(a), Some(b)) => (a == b) == flt.same,
            _ => false,
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ListKey {
    Sid(RuleIdx),
    Group(RuleIdx),
}

/// A FIFO-bounded set of strings, bounded in entries and in bytes.
#[derive(Debug, Default)]
struct BoundedSet {
    set: HashSet<String>,
    order: VecDeque<String>,
    bytes: usize,
}

impl BoundedSet {
    fn contains(&self, k: &str) -> bool {
        self.set.contains(k)
    }

    /// Inserts; returns false if it was already there. Keeps at most
    /// `cap` keys and about `max_bytes` bytes (the newest key always).
    fn insert(&mut self, k: String, cap: usize, max_bytes: usize) -> bool {
        if self.set.contains(&k) {
            return false;
        }
        self.bytes += 2 * (k.len() + STRING_OVERHEAD);
        self.set.insert(k.clone());
        self.order.push_back(k);
        while self.order.len() > cap.max(1) || (self.order.len() > 1 && self.bytes > max_bytes) {
            if let Some(old) = self.order.pop_front() {
                self.bytes -= 2 * (old.len() + STRING_OVERHEAD);
                self.set.remove(&old);
            }
        }
        true
    }
}

/// One `if_matched_*` search list: event ids, oldest first, plus an index
/// of the same ids by source address.
///
/// Why the index: a frequency rule with `same_source_ip` (sshd brute force,
/// web scans) used to walk the whole list, newest to oldest, on every
/// event that reached it, i.e. thousands of entries for a busy list. The
/// index walks only that address's entries. It gives the same answer as the
/// full walk because, while arrival times in the list never go backwards,
/// the full walk's two early stops can be found without it: the first
/// event older than the timeframe cuts off only older entries (which are
/// too old themselves), and the barrier is the newest list event whose
/// mark reaches the rule's level, found from the few marked events
/// (`List::marks`). A list whose times went backwards (event-time
/// replay of unordered lines) is walked in full, as before.
#[derive(Debug, Default)]
struct List {
    ids: VecDeque<u64>,
    by_src: HashMap<String, VecDeque<u64>>,
    /// The ids in this list that carry a barrier mark.
    marks: std::collections::BTreeSet<u64>,
    last_time: i64,
    monotonic: bool,
}

impl List {
    fn push(&mut self, id: u64, e: &Stored) {
        if self.ids.is_empty() {
            self.monotonic = true;
        } else if e.time < self.last_time {
            self.monotonic = false;
        }
        self.last_time = e.time;
        self.ids.push_back(id);
        if e.matched > 0 {
            self.marks.insert(id);
        }
        if let Some(src) = &e.srcip {
            self.by_src.entry(src.clone()).or_default().push_back(id);
        }
    }

    /// Drops the oldest id (which must be `id`) from the list and index.
    fn pop_front(&mut self, e: Option<&Stored>) {
        let Some(id) = self.ids.pop_front() else {
            return;
        };
        self.marks.remove(&id);
        if let Some(src) = e.and_then(|e| e.srcip.as_ref())
            && let Some(q) = self.by_src.get_mut(src)
        {
            if q.front() == Some(&id) {
                q.pop_front();
            }
            if q.is_empty() {
                self.by_src.remove(src);
            }
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.ids.binary_search(&id).is_ok()
    }
}

/// The stored events, oldest first: ids are handed out in order and the
/// oldest is always the one evicted (the global history is FIFO), so an
/// id's slot is `id - base` and no hashing is needed.
#[derive(Debug, Default)]
struct Arena {
    base: u64,
    events: VecDeque<Stored>,
}

impl Arena {
    fn get(&self, id: u64) -> Option<&Stored> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.events.get(i)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Stored> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.events.get_mut(i)
    }
}

/// All correlation state of one engine.
#[derive(Debug, Default)]
pub struct Correlator {
    limits: CorrelateLimits,
    barrier: Barrier,
    /// Walk every list in full (the reference for the index; tests only).
    full_walk: bool,
    events: Arena,
    /// What the arena's events cost ([`Stored::cost`]), summed.
    event_bytes: usize,
    history: VecDeque<u64>,
    lists: HashMap<ListKey, List>,
    next_id: u64,
    time_ignored: HashMap<RuleIdx, i64>,
    ignore_list: BoundedSet,
    fts: BoundedSet,
    diffs: HashMap<(RuleIdx, String), Vec<u8>>,
    diff_order: VecDeque<(RuleIdx, String)>,
    /// What `diffs` holds, in bytes (keys and outputs).
    diff_bytes: usize,
}

/// Result of a successful context search: the earlier events' lines,
/// newest first (OSSEC's "Portion of the log(s)").
pub type ContextLines = Vec<String>;

fn same(a: &Option<String>, b: &Option<String>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x == y)
}

impl Correlator {
    /// Empty state with these limits.
    pub fn new(limits: CorrelateLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Empty state with these limits and barrier semantics.
    pub fn with_barrier(limits: CorrelateLimits, barrier: Barrier) -> Self {
        Self {
            limits,
            barrier,
            ..Self::default()
        }
    }

    /// Turns the per-address index off: every search walks its whole
    /// list, as OSSEC does. The reference the index is tested against.
    #[doc(hidden)]
    pub fn set_full_walk(&mut self, on: bool) {
        self.full_walk = on;
    }

    /// Number of events held (for tests and metrics).
    pub fn stored_events(&self) -> usize {
        self.events.events.len()
    }

    /// What the held events take, in bytes (estimated; for tests and
    /// metrics): at most [`CorrelateLimits::memory_bytes`] plus one event.
    pub fn stored_bytes(&self) -> usize {
        self.event_bytes
    }

    /// Total list entries held (for tests and metrics).
    pub fn list_entries(&self) -> usize {
        self.lists.values().map(|l| l.ids.len()).sum::<usize>() + self.history.len()
    }

    /// Runs rule `r`'s context search for the current event. On a match,
    /// sets the barrier marks (`matched` of the current event, the oldest
    /// counted event and the newest event of the list, or with
    /// [`Barrier::PerSource`] the newest counted one) and returns the
    /// counted events' lines.
    pub fn search(
        &mut self,
        rs: &RuleSet,
        r: RuleIdx,
        ev: &Event,
        now: i64,
        cur_matched: &mut u32,
    ) -> Option<ContextLines> {
        let rule = &rs.rules[r];
        let empty = VecDeque::new();
        let (list, events_search): (Option<&List>, bool) = match rs.search[r] {
            Search::None => return None,
            Search::Sids(t) => (Some(self.lists.get(&ListKey::Sid(t))?), false),
            Search::Groups => (Some(self.lists.get(&ListKey::Group(r))?), false),
            Search::Events => (None, true),
        };
        let s = rule.ctx.same;
        let wazuh = rs.dialect.is_wazuh();
        let global = self.barrier == Barrier::Global && !wazuh;
        // The indexed walk: only this address's entries.
        if let Some(list) = list
            && s.source_ip
            && list.monotonic
            && !self.full_walk
        {
            let Some(src) = ev.fields.srcip.as_deref() else {
                // `same_source_ip` never holds without an address.
                return None;
            };
            let ids = list.by_src.get(src).unwrap_or(&empty);
            let (stop_at, newest) = if global {
                (
                    self.newest_barrier(list, rule.level, rule.timeframe, now),
                    list.ids.back().copied(),
                )
            } else {
                (None, None)
            };
            let walk = ids
                .iter()
                .rev()
                .copied()
                .take_while(|&id| stop_at.is_none_or(|b| id > b));
            let hit = self.walk(rule, ev, now, walk, false, global, wazuh, newest);
            return self.fire(rule, hit, wazuh, cur_matched);
        }
        let ids = match list {
            Some(l) => &l.ids,
            None => &self.history,
        };
        let hit = self.walk(
            rule,
            ev,
            now,
            ids.iter().rev().copied(),
            events_search,
            global,
            wazuh,
            None,
        );
        self.fire(rule, hit, wazuh, cur_matched)
    }

    /// The newest event of `list` whose barrier mark reaches `level`,
    /// among those not older than the timeframe (an older one is never
    /// reached: the walk stops at the first too-old event).
    fn newest_barrier(&self, list: &List, level: u32, timeframe: u32, now: i64) -> Option<u64> {
        for &id in list.marks.iter().rev() {
            let Some(e) = self.events.get(id) else {
                continue;
            };
            if now - e.time > i64::from(timeframe) {
                return None;
            }
            if e.matched >= level {
                return Some(id);
            }
        }
        None
    }

    /// OSSEC's search loop over `ids` (newest first). Returns the counted
    /// events' ids, the id that completed the count and the id to mark as the
    /// list's newest, or `None`.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        rule: &crate::rule::Rule,
        ev: &Event,
        now: i64,
        ids: impl Iterator<Item = u64>,
        events_search: bool,
        global: bool,
        wazuh: bool,
        mut newest: Option<u64>,
    ) -> Option<(Vec<u64>, u64, Option<u64>)> {
        let f = &ev.fields;
        let s = rule.ctx.same;
        // Wazuh's searches stay within the current event's agent.
        let agent = (wazuh && !rule.ctx.global_frequency).then(|| agent_of(&ev.location));
        let mut count = 0u32;
        let mut lines = Vec::new();
        for pid in ids {
            let Some(p) = self.events.get(pid) else {
                continue;
            };
            if global && newest.is_none() {
                newest = Some(pid);
            }
            if now - p.time > i64::from(rule.timeframe) {
                return None;
            }
            if let Some(agent) = agent
                && p.agent.as_deref().unwrap_or("") != agent
            {
                continue;
            }
            if global && p.matched >= rule.level {
                return None;
            }
            if s.id && !same(&f.id, &p.id) {
                continue;
            }
            if s.source_ip && !same(&f.srcip, &p.srcip) {
                continue;
            }
            if s.user && !same(&f.dstuser, &p.dstuser) {
                continue;
            }
            if s.different_url {
                match (&f.url, &p.url) {
                    (Some(a), Some(b)) if a != b => {}
                    _ => continue,
                }
            }
            if s.different_srcgeoip {
                // No GeoIP data: the field is missing on both sides.
                continue;
            }
            if !rule.ctx.filters.is_empty()
                && !p
                    .wide
                    .as_deref()
                    .is_some_and(|w| static_filters_hold(&rule.ctx.filters, ev, w))
            {
                continue;
            }
            if events_search {
                if let Some(re) = &rule.ctx.if_matched_regex
                    && !re.is_match(p.log())
                {
                    continue;
                }
                if p.category != ev.category {
                    continue;
                }
            } else {
                if s.src_port && !same(&f.srcport, &p.srcport) {
                    continue;
                }
                if s.dst_port && !same(&f.dstport, &p.dstport) {
                    continue;
                }
                if s.location && !same(&ev.hostname, &p.hostname) {
                    continue;
                }
            }
            if !global {
                if p.matched >= rule.level {
                    return None;
                }
                if newest.is_none() {
                    newest = Some(pid);
                }
            }
            lines.push(pid);
            count += 1;
            if count < rule.fires_after {
                continue;
            }
            return Some((lines, pid, newest));
        }
        None
    }

    /// A firing: the barrier marks on the current event, the event that
    /// completed the count and the list's newest. Wazuh 4 (`wazuh`) marks
    /// the current event and, when more than one event was counted, only
    /// the newest counted one (its `first_matched`): a rule that needs one
    /// earlier event leaves it unmarked, so a chain of `if_matched_sid`
    /// rules fires again on the next event.
    fn fire(
        &mut self,
        rule: &crate::rule::Rule,
        hit: Option<(Vec<u64>, u64, Option<u64>)>,
        wazuh: bool,
        cur_matched: &mut u32,
    ) -> Option<ContextLines> {
        let (lines, pid, newest) = hit?;
        let level = rule.level;
        *cur_matched = level;
        let marked = if wazuh {
            [None, newest.filter(|_| lines.len() > 1)]
        } else {
            [Some(pid), newest]
        };
        for id in marked.into_iter().flatten() {
            if let Some(e) = self.events.get_mut(id) {
                e.matched = level;
                // The event may sit in several (group) lists.
                for list in self.lists.values_mut() {
                    if list.contains(id) {
                        list.marks.insert(id);
                    }
                }
            }
        }
        Some(
            lines
                .into_iter()
                .filter_map(|id| self.events.get(id).map(Stored::full_log))
                .collect(),
        )
    }

    /// Stores an event that finally alerted as rule `r`: in `r`'s sid list
    /// if some rule watches it, else in the group lists it feeds, and always
    /// in the global history.
    pub fn store(&mut self, rs: &RuleSet, r: RuleIdx, ev: &Event, now: i64, matched: u32) {
        let id = self.next_id;
        self.next_id += 1;
        let f = &ev.fields;
        let line = cut_at(&ev.full_log, self.limits.event_bytes);
        let log = ev.log_range();
        let log = log.start.min(line.len())..log.end.min(line.len());
        // Fields are cut like the line: a URL can be as long as the line
        // (`different_url` then compares the kept heads).
        let max = self.limits.event_bytes;
        let field = |v: &Option<String>| {
            v.as_deref().map(|s| {
                let kept = cut_at(s.as_bytes(), max).len();
                s.get(..kept).unwrap_or(s).to_string()
            })
        };
        let stored = Stored {
            time: now,
            matched,
            srcip: field(&f.srcip),
            srcport: field(&f.srcport),
            dstport: field(&f.dstport),
            dstuser: field(&f.dstuser),
            id: field(&f.id),
            hostname: field(&ev.hostname),
            url: field(&f.url),
            category: ev.category,
            line: line.into(),
            log,
            wide: rs
                .keeps_fields
                .then(|| Box::new((ev.fields.clone(), ev.location.clone()))),
            agent: Some(agent_of(&ev.location))
                .filter(|a| rs.dialect.is_wazuh() && !a.is_empty())
                .map(Box::from),
        };
        let mut keys = Vec::new();
        if rs.has_sid_list.get(r).copied().unwrap_or(false) {
            keys.push((ListKey::Sid(r), rs.list_horizon[r]));
        } else if let Some(groups) = rs.feeds_groups.get(r) {
            for &g in groups {
                keys.push((ListKey::Group(g), rs.list_horizon[g]));
            }
        }
        for (k, horizon) in keys {
            let events = &self.events;
            let list = self.lists.entry(k).or_default();
            while let Some(&front) = list.ids.front() {
                let e = events.get(front);
                if e.is_none_or(|e| now - e.time > i64::from(horizon)) {
                    list.pop_front(e);
                } else {
                    break;
                }
            }
            list.push(id, &stored);
        }
        #[cfg(feature = "test-panic-trigger")]
        if crate::engine::test_panic_trigger::holds(ev, crate::engine::test_panic_trigger::IN_STORE)
        {
            panic!("test panic trigger: in the middle of storing an event");
        }
        if self.events.events.is_empty() {
            self.events.base = id;
        }
        self.event_bytes += stored.cost();
        self.events.events.push_back(stored);
        self.history.push_back(id);
        while self.history.len() > self.limits.memory_size.max(1)
            || (self.history.len() > 1 && self.event_bytes > self.limits.memory_bytes)
        {
            if let Some(old) = self.history.pop_front() {
                self.evict(old);
            }
        }
    }

    fn evict(&mut self, old: u64) {
        // Ids grow with time and lists are FIFO: the evicted event is at the
        // front of any list that still holds it.
        let events = &self.events;
        self.lists.retain(|_, list| {
            while let Some(&f) = list.ids.front()
                && f <= old
            {
                list.pop_front(events.get(f));
            }
            !list.ids.is_empty()
        });
        // The arena's front is the oldest stored event, `old` itself.
        while self.events.base <= old {
            let Some(gone) = self.events.events.pop_front() else {
                break;
            };
            self.event_bytes = self.event_bytes.saturating_sub(gone.cost());
            self.events.base += 1;
        }
    }

    /// Checks the links between the arena, the history and the lists that
    /// the searches rely on: the history holds the arena's ids in order,
    /// every list id is a stored event, every address index entry is one of
    /// its list's ids for that address and every mark is a list id. `Err`
    /// names the first broken one. Linear in the memory's size: for after a
    /// panic, not for every event.
    pub fn check_consistency(&self) -> Result<(), String> {
        let base = self.events.base;
        let stored = self.events.events.len();
        if self.history.len() != stored {
            return Err(format!(
                "history holds {} ids, the arena {stored} events",
                self.history.len()
            ));
        }
        if let Some((i, &id)) =
            self.history.iter().enumerate().find(|&(i, &id)| {
                u64::try_from(i).ok().and_then(|i| base.checked_add(i)) != Some(id)
            })
        {
            return Err(format!(
                "history slot {i} holds id {id}, not {}",
                base + i as u64
            ));
        }
        let end = base + stored as u64;
        if stored > 0 && self.next_id != end {
            return Err(format!("next id {} after arena end {end}", self.next_id));
        }
        for (key, list) in &self.lists {
            if !list
                .ids
                .iter()
                .zip(list.ids.iter().skip(1))
                .all(|(a, b)| a < b)
            {
                return Err(format!("{key:?}: ids out of order"));
            }
            if let Some(id) = list.ids.iter().find(|&&id| id < base || id >= end) {
                return Err(format!("{key:?}: id {id} is not a stored event"));
            }
            if let Some(id) = list.marks.iter().find(|&&id| !list.contains(id)) {
                return Err(format!("{key:?}: mark {id} is not in the list"));
            }
            let mut indexed = 0;
            for (src, ids) in &list.by_src {
                for &id in ids {
                    let from = self.events.get(id).and_then(|e| e.srcip.as_deref());
                    if !list.contains(id) || from != Some(src.as_str()) {
                        return Err(format!("{key:?}: index entry {id} for {src} is stale"));
                    }
                }
                indexed += ids.len();
            }
            let with_src = list
                .ids
                .iter()
                .filter(|&&id| self.events.get(id).is_some_and(|e| e.srcip.is_some()))
                .count();
            if indexed != with_src {
                return Err(format!(
                    "{key:?}: {indexed} index entries for {with_src} events with an address"
                ));
            }
        }
        Ok(())
    }

    /// Drops every memory (events, lists, keys), keeping the limits and
    /// the barrier: a fresh start after a panic left the links broken.
    pub fn reset(&mut self) {
        *self = Self::with_barrier(self.limits, self.barrier);
    }

    /// The `ignore="N"` attribute: true if this firing of rule `r` must be
    /// dropped (OSSEC: first firing starts the window, firings inside it are
    /// dropped, the first one after it restarts it).
    pub fn ignored_by_time(&mut self, r: RuleIdx, secs: u32, now: i64) -> bool {
        if secs == 0 {
            return false;
        }
        match self.time_ignored.get(&r) {
            Some(&t) if now - t < i64::from(secs) => true,
            _ => {
                self.time_ignored.insert(r, now);
                false
            }
        }
    }

    /// `<check_if_ignored>`: whether this key is in the ignore list.
    pub fn in_ignore_list(&self, key: &str) -> bool {
        self.ignore_list.contains(key)
    }

    /// `<ignore>`: adds a key to the ignore list.
    pub fn add_to_ignore_list(&mut self, key: String) {
        self.ignore_list
            .insert(key, self.limits.key_cap, self.limits.key_bytes);
    }

    /// First-time-seen: true if `key` was never seen (and records it).
    pub fn first_time_seen(&mut self, key: String) -> bool {
        self.fts
            .insert(key, self.limits.key_cap, self.limits.key_bytes)
    }

    /// `check_diff`: true when `output` differs from the previous output
    /// stored for this rule and location (the first output only records).
    pub fn output_changed(&mut self, r: RuleIdx, location: &str, output: &[u8]) -> bool {
        let key = (r, location.to_string());
        match self.diffs.get_mut(&key) {
            Some(prev) if prev.as_slice() == output => false,
            Some(prev) => {
                self.diff_bytes = self.diff_bytes - prev.len() + output.len();
                *prev = output.to_vec();
                true
            }
            None => {
                self.diff_bytes += 2 * (key.1.len() + STRING_OVERHEAD) + output.len();
                self.diffs.insert(key.clone(), output.to_vec());
                self.diff_order.push_back(key);
                while self.diff_order.len() > self.limits.key_cap.max(1)
                    || (self.diff_order.len() > 1 && self.diff_bytes > self.limits.key_bytes)
                {
                    if let Some(old) = self.diff_order.pop_front()
                        && let Some(out) = self.diffs.remove(&old)
                    {
                        self.diff_bytes -= 2 * (old.1.len() + STRING_OVERHEAD) + out.len();
                    }
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::default_ruleset;
    use crate::engine::{Engine, EngineConfig};
    use crate::predecode::predecode;

    fn engine_with_history() -> Engine {
        let rs = Arc::new(default_ruleset::load().unwrap_or_else(|e| panic!("{e}")));
        let mut engine = Engine::new(rs, EngineConfig::default());
        let now = jiff::Timestamp::from_second(1_765_000_000).unwrap_or_default();
        for ip in ["198.51.100.7", "198.51.100.8", "198.51.100.7"] {
            let line = format!(
                "Dec  6 23:59:01 web01 sshd[42]: Failed password for root from {ip} port 5 ssh2"
            );
            let mut ev = predecode(line.as_bytes(), "/var/log/auth.log", "mgr");
            assert!(engine.process(&mut ev, now).is_some());
        }
        engine
    }

    #[test]
    fn consistency_is_checked_and_restored() {
        let mut engine = engine_with_history();
        assert_eq!(engine.state().check_consistency(), Ok(()));
        assert_eq!(engine.recover_after_panic(), None, "kept when whole");
        assert_eq!(engine.state().stored_events(), 3);

        // A store cut after the lists were fed: an id no event holds.
        let c = engine.state_mut();
        c.next_id += 1;
        let Some(list) = c.lists.values_mut().next() else {
            panic!("no list")
        };
        list.ids.push_back(c.next_id - 1);
        assert!(c.check_consistency().is_err());
        let why = engine.recover_after_panic();
        assert!(why.is_some_and(|w| w.contains("next id")));
        assert_eq!(engine.state().stored_events(), 0);
        assert_eq!(engine.state().check_consistency(), Ok(()));

        // A stale address index entry.
        let mut engine = engine_with_history();
        let c = engine.state_mut();
        for list in c.lists.values_mut() {
            for ids in list.by_src.values_mut() {
                ids.push_back(0);
            }
        }
        assert!(c.check_consistency().is_err_and(|e| e.contains("index")));
    }
}
