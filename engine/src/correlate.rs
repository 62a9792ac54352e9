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
//! `Search_LastEvents` in `src/analysisd/eventinfo.c`).
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
}

impl Default for CorrelateLimits {
    fn default() -> Self {
        Self {
            memory_size: 8192,
            key_cap: 65_536,
        }
    }
}

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
    log: Vec<u8>,
    full_log: String,
    /// Every field and the location, kept only when some rule has Wazuh
    /// static filters ([`RuleSet::keeps_fields`]).
    wide: Option<Box<(Fields, String)>>,
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

/// A FIFO-bounded set of strings.
#[derive(Debug, Default)]
struct BoundedSet {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl BoundedSet {
    fn contains(&self, k: &str) -> bool {
        self.set.contains(k)
    }

    /// Inserts; returns false if it was already there.
    fn insert(&mut self, k: String, cap: usize) -> bool {
        if self.set.contains(&k) {
            return false;
        }
        self.set.insert(k.clone());
        self.order.push_back(k);
        while self.order.len() > cap.max(1) {
            if let Some(old) = self.order.pop_front() {
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
    history: VecDeque<u64>,
    lists: HashMap<ListKey, List>,
    next_id: u64,
    time_ignored: HashMap<RuleIdx, i64>,
    ignore_list: BoundedSet,
    fts: BoundedSet,
    diffs: HashMap<(RuleIdx, String), Vec<u8>>,
    diff_order: VecDeque<(RuleIdx, String)>,
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
        let global = self.barrier == Barrier::Global;
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
            let hit = self.walk(rule, ev, now, walk, false, global, newest);
            return self.fire(rule, hit, cur_matched);
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
            None,
        );
        self.fire(rule, hit, cur_matched)
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
        mut newest: Option<u64>,
    ) -> Option<(Vec<u64>, u64, Option<u64>)> {
        let f = &ev.fields;
        let s = rule.ctx.same;
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
                    && !re.is_match(&p.log)
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
    /// completed the count and the list's newest.
    fn fire(
        &mut self,
        rule: &crate::rule::Rule,
        hit: Option<(Vec<u64>, u64, Option<u64>)>,
        cur_matched: &mut u32,
    ) -> Option<ContextLines> {
        let (lines, pid, newest) = hit?;
        let level = rule.level;
        *cur_matched = level;
        for id in std::iter::once(pid).chain(newest) {
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
                .filter_map(|id| self.events.get(id).map(|e| e.full_log.clone()))
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
        let stored = Stored {
            time: now,
            matched,
            srcip: f.srcip.clone(),
            srcport: f.srcport.clone(),
            dstport: f.dstport.clone(),
            dstuser: f.dstuser.clone(),
            id: f.id.clone(),
            hostname: ev.hostname.clone(),
            url: f.url.clone(),
            category: ev.category,
            log: ev.log().to_vec(),
            // `from_utf8` has an ASCII fast path that the lossy decoder lacks.
            full_log: std::str::from_utf8(&ev.full_log).map_or_else(
                |_| String::from_utf8_lossy(&ev.full_log).into_owned(),
                str::to_owned,
            ),
            wide: rs
                .keeps_fields
                .then(|| Box::new((ev.fields.clone(), ev.location.clone()))),
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
        if self.events.events.is_empty() {
            self.events.base = id;
        }
        self.events.events.push_back(stored);
        self.history.push_back(id);
        while self.history.len() > self.limits.memory_size.max(1) {
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
        while self.events.base <= old && self.events.events.pop_front().is_some() {
            self.events.base += 1;
        }
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
        self.ignore_list.insert(key, self.limits.key_cap);
    }

    /// First-time-seen: true if `key` was never seen (and records it).
    pub fn first_time_seen(&mut self, key: String) -> bool {
        self.fts.insert(key, self.limits.key_cap)
    }

    /// `check_diff`: true when `output` differs from the previous output
    /// stored for this rule and location (the first output only records).
    pub fn output_changed(&mut self, r: RuleIdx, location: &str, output: &[u8]) -> bool {
        let key = (r, location.to_string());
        match self.diffs.get_mut(&key) {
            Some(prev) if prev.as_slice() == output => false,
            Some(prev) => {
                *prev = output.to_vec();
                true
            }
            None => {
                self.diffs.insert(key.clone(), output.to_vec());
                self.diff_order.push_back(key);
                while self.diff_order.len() > self.limits.key_cap.max(1) {
                    if let Some(old) = self.diff_order.pop_front() {
                        self.diffs.remove(&old);
                    }
                }
                false
            }
        }
    }
}
