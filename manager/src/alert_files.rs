//! `alerts.log` and `alerts.json`: `[alerts]` in manager.toml.
//!
//! ```toml
//! [alerts]
//! log_file = "logs/alerts/alerts.log"    # OSSEC's layout; "" turns it off
//! json_file = "logs/alerts/alerts.json"  # Wazuh's fields; off unless set
//! log_alert_level = 1                    # lower alerts are not written
//! keep_days = 0                          # 0: keep every day's file
//! ```
//!
//! As OSSEC, the manager writes `alerts.log` unless told not to; the JSON
//! file is off unless named. Rules with `no_log` are never written.
//!
//! # Rotation
//!
//! The configured name always holds the current day, so a shipper tailing
//! it by name keeps working. At the first write (or the one-second check)
//! after local midnight the file is renamed to
//! `<dir>/<YYYY>/<Mon>/<stem>-<DD>.<ext>` (OSSEC's
//! `logs/alerts/2026/Nov/ossec-alerts-28.log` with our stem) and a new one is
//! started; with `keep_days` set, dated files older than that many days
//! are deleted. A file left from an earlier day by a stopped manager is
//! rotated under the day it was last written when the manager starts.
//!
//! # Writing
//!
//! [`AlertFiles::publish`] only queues the alert; one thread renders and
//! writes, and flushes whenever the queue is empty, so the files are whole
//! entries at rest. [`AlertFiles::close`] writes what is queued, flushes and
//! waits for the thread: a clean shutdown loses nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::ZonedDateTime;
use jiff::civil::Date;
use palisade_common::config::Problems;
use serde::Deserialize;
use tracing::{debug, warn};

use palisade_engine::alert_format::{self, JsonAgent};

use crate::outputs::AlertSink;
use crate::store::StoredAlert;

/// Alerts queued for the writer before `publish` waits for it.
const QUEUE: usize = 16_384;
/// How often an idle writer looks at the date.
const TICK: Duration = Duration::from_secs(1);

/// `[alerts]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertFiles {
    /// The alerts.log path; `""` turns it off. Default `logs/alerts/alerts.log`.
    pub log_file: Option<PathBuf>,
    /// The alerts.json path; off unless set.
    pub json_file: Option<PathBuf>,
    /// Alerts below this level are not written (OSSEC's `log_alert_level`).
    pub log_alert_level: Option<u32>,
    /// Delete dated files older than this many days (0: never).
    pub keep_days: Option<u32>,
}

/// The validated `[alerts]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilesConfig {
    /// alerts.log, if written.
    pub log_file: Option<PathBuf>,
    /// alerts.json, if written.
    pub json_file: Option<PathBuf>,
    /// Alerts below this level are not written.
    pub log_alert_level: u32,
    /// Delete dated files older than this many days.
    pub keep_days: Option<u32>,
}

/// Where alerts.log goes unless configured, relative to manager.toml.
pub const DEFAULT_LOG_FILE: &str = "logs/alerts/alerts.log";

impl Default for AlertFilesConfig {
    fn default() -> Self {
        Self {
            log_file: None,
            json_file: None,
            log_alert_level: 1,
            keep_days: None,
        }
    }
}

impl AlertFilesConfig {
    /// Whether any file is written.
    pub fn enabled(&self) -> bool {
        self.log_file.is_some() || self.json_file.is_some()
    }
}

/// Checks `[alerts]`; problems go to `errors`, each naming its key.
pub fn compile(raw: RawAlertFiles, base: &Path, errors: &mut Problems) -> AlertFilesConfig {
    let path = |p: PathBuf| (!p.as_os_str().is_empty()).then(|| base.join(p));
    let log_file = path(raw.log_file.unwrap_or_else(|| DEFAULT_LOG_FILE.into()));
    let json_file = raw.json_file.and_then(path);
    if log_file.is_some() && log_file == json_file {
        errors.push(
            "alerts.json_file",
            "must not be the same file as alerts.log_file",
        );
    }
    for (key, p) in [("log_file", &log_file), ("json_file", &json_file)] {
        if let Some(p) = p
            && p.file_name().is_none()
        {
            errors.push(
                format!("alerts.{key}"),
                format!("{} names no file", p.display()),
            );
        }
    }
    let log_alert_level = raw.log_alert_level.unwrap_or(1);
    if log_alert_level > 16 {
        errors.push(
            "alerts.log_alert_level",
            format!("{log_alert_level} is above the highest rule level 16"),
        );
    }
    AlertFilesConfig {
        log_file,
        json_file,
        log_alert_level,
        keep_days: raw.keep_days.filter(|d| *d > 0),
    }
}

/// The local time now; tests pass their own.
pub type Clock = Arc<dyn Fn() -> ZonedDateTime + Send + Sync>;

/// The system clock in the system's zone.
pub fn system_clock() -> Clock {
    Arc::new(ZonedDateTime::now)
}

/// One file that holds the current day under a fixed name and is renamed
/// to a dated name when the day changes.
#[derive(Debug)]
pub struct DailyFile {
    path: PathBuf,
    keep_days: Option<u32>,
    day: Date,
    out: BufWriter<File>,
}

impl DailyFile {
    /// Opens `path` for `today` (creating directories); a non-empty file
    /// last written on an earlier day is rotated first.
    pub fn open(path: &Path, keep_days: Option<u32>, now: &ZonedDateTime) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let today = now.date();
        if let Ok(meta) = fs::metadata(path)
            && meta.len() > 0
        {
            let written = meta
                .modified()
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(|t| t.to_zoned_datetime(now.time_zone().clone()).date());
            if let Some(day) = written
                && day < today
            {
                rotate(path, day, keep_days, today)?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            keep_days,
            day: today,
            out: BufWriter::new(append(path)?),
        })
    }

    /// Writes `bytes` into the file for `today`, rotating first when the
    /// day changed.
    /// A failed rotation is reported after the write: the alert still goes
    /// into the current file.
    pub fn write(&mut self, today: Date, bytes: &[u8]) -> io::Result<()> {
        let rolled = self.roll(today);
        self.out.write_all(bytes)?;
        rolled
    }

    /// Rotates when `today` is not the file's day.
    pub fn roll(&mut self, today: Date) -> io::Result<()> {
        if today == self.day {
            return Ok(());
        }
        // One attempt per day, also when it fails.
        let day = std::mem::replace(&mut self.day, today);
        self.out.flush()?;
        if fs::metadata(&self.path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            rotate(&self.path, day, self.keep_days, today)?;
            self.out = BufWriter::new(append(&self.path)?);
        }
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The dated name of `path`'s content of `day`:
/// `<dir>/<YYYY>/<Mon>/<stem>-<DD>.<ext>`.
pub fn dated_path(path: &Path, day: Date) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{:02}.{}", day.day(), ext.to_string_lossy()),
        None => format!("{stem}-{:02}", day.day()),
    };
    dir.join(day.strftime("%Y").to_string())
        .join(day.strftime("%b").to_string())
        .join(name)
}

/// Moves the current file to its dated name (never over an existing one)
/// and deletes dated files older than `keep_days` before `today`.
fn rotate(path: &Path, day: Date, keep_days: Option<u32>, today: Date) -> io::Result<()> {
    let dated = dated_path(path, day);
    if let Some(dir) = dated.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut target = dated.clone();
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.{n}", dated.display()));
        n += 1;
    }
    fs::rename(path, &target)?;
    debug!(from = %path.display(), to = %target.display(), "Rotated an alerts file.");
    if let Some(keep) = keep_days {
        remove_old(path, today, keep);
    }
    Ok(())
}

/// Deletes `path`'s dated files from more than `keep` days before `today`.
fn remove_old(path: &Path, today: Date, keep: u32) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let Ok(oldest) = today.checked_sub(jiff::Span::new().days(i64::from(keep))) else {
        return;
    };
    // Dated names only depend on the day, so walk the days from the oldest
    // kept backwards for as long as year directories exist.
    let years = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i16>().ok()));
    let Some(first_year) = years.min() else {
        return;
    };
    let mut day = oldest;
    while let Ok(prev) = day.yesterday() {
        day = prev;
        if day.year() < first_year {
            break;
        }
        let dated = dated_path(path, day);
        for candidate in numbered(&dated) {
            if let Err(error) = fs::remove_file(&candidate) {
                warn!(file = %candidate.display(), %error, "Cannot delete an old alerts file.");
            }
        }
        if let Some(month) = dated.parent()
            && fs::read_dir(month)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        {
            let _ = fs::remove_dir(month);
            if let Some(year) = month.parent()
                && fs::read_dir(year)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
            {
                let _ = fs::remove_dir(year);
            }
        }
    }
}

/// `dated` and its `.1`, `.2` ... siblings that exist.
fn numbered(dated: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dated.exists() {
        out.push(dated.to_path_buf());
    }
    let mut n = 1;
    loop {
        let p = PathBuf::from(format!("{}.{n}", dated.display()));
        if !p.exists() {
            return out;
        }
        out.push(p);
        n += 1;
    }
}

/// What the writer thread takes.
type Job = StoredAlert;

/// How the writer renders.
#[derive(Debug, Clone)]
pub struct Rendering {
    /// Alerts at or above this level carry the mail flag.
    pub email_alert_level: u32,
    /// The manager's name (`manager.name` in JSON, the agent of its own events).
    pub manager: String,
    /// The zone of the dates written (the manager's local zone).
    pub zone: jiff::tz::TimeZone,
}

/// The alert files' sink: a queue to one writer thread.
#[derive(Debug, Clone)]
pub struct AlertFiles {
    tx: Arc<Mutex<Option<SyncSender<Job>>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    min_level: u32,
}

impl AlertFiles {
    /// Opens the configured files (rotating one left from an earlier day)
    /// and starts the writer. `None` when no file is configured.
    pub fn start(
        config: &AlertFilesConfig,
        rendering: Rendering,
        clock: Clock,
    ) -> io::Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        let now = clock();
        let open = |p: &Option<PathBuf>| {
            p.as_deref()
                .map(|p| DailyFile::open(p, config.keep_days, &now))
                .transpose()
        };
        let writer = Writer {
            log: open(&config.log_file)?,
            json: open(&config.json_file)?,
            rendering,
            clock,
            failing: false,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("palisade-alert-files".into())
            .spawn(move || writer.run(rx))?;
        Ok(Some(Self {
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(Some(thread))),
            min_level: config.log_alert_level,
        }))
    }

    /// Writes what is queued, flushes, and stops the writer. Later alerts
    /// are not written.
    pub fn close(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            warn!("The alert file writer panicked.");
        }
    }
}

impl AlertSink for AlertFiles {
    fn publish(&self, alert: &StoredAlert) {
        if !alert.alert.log_it() || alert.alert.level < self.min_level {
            return;
        }
        let job = alert.clone();
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(tx) = tx else {
            debug!(id = alert.id, "Alert files closed; alert not written.");
            return;
        };
        match tx.try_send(job) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(job)) => {
                // The disk is far behind: wait rather than lose alerts.
                warn!("The alert files are behind; waiting for the writer.");
                let _ = tx.send(job);
            }
        }
    }
}

struct Writer {
    log: Option<DailyFile>,
    json: Option<DailyFile>,
    rendering: Rendering,
    clock: Clock,
    failing: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(job) => {
                    self.write(&job);
                    // Take what else is queued, then flush once.
                    while let Ok(job) = rx.try_recv() {
                        self.write(&job);
                    }
                    self.flush();
                }
                Err(RecvTimeoutError::Timeout) => self.roll(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }

    fn write(&mut self, stored: &StoredAlert) {
        let today = (self.clock)().date();
        let alert = &stored.alert;
        let r = &self.rendering;
        let mail = alert.mail_flag(r.email_alert_level);
        // The store's id stands where OSSEC has the entry's byte offset.
        let n = u64::try_from(stored.id).unwrap_or(0);
        let mut result = Ok(());
        if let Some(log) = &mut self.log {
            let entry = alert_format::alerts_log_entry(alert, n, mail, &r.zone);
            result = result.and(log.write(today, entry.as_bytes()));
        }
        if let Some(json) = &mut self.json {
            let o = &stored.origin;
            let agent = o.agent_id.as_deref().map(|id| JsonAgent {
                id,
                name: &o.name,
                ip: &o.ip,
            });
            let mut line = alert_format::alert_json(alert, n, agent, mail, &r.manager, &r.zone);
            line.push('\n');
            result = result.and(json.write(today, line.as_bytes()));
        }
        self.report(result);
    }

    fn roll(&mut self) {
        let today = (self.clock)().date();
        let mut result = Ok(());
        for file in [&mut self.log, &mut self.json].into_iter().flatten() {
            result = result.and(file.roll(today));
        }
        self.report(result);
    }

    fn flush(&mut self) {
        let mut result = Ok(());
        for file in [&mut self.log, &mut self.json].into_iter().flatten() {
            result = result.and(file.flush());
        }
        self.report(result);
    }

    /// Logs the first failure of a streak, and the recovery.
    fn report(&mut self, result: io::Result<()>) {
        match result {
            Err(error) if !self.failing => {
                self.failing = true;
                warn!(%error, "Cannot write the alert files.");
            }
            Ok(()) if self.failing => {
                self.failing = false;
                warn!("Writing the alert files again.");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use jiff::civil::date;
    use jiff::tz::TimeZone;

    use super::*;

    fn zoned(d: Date, hour: i8) -> ZonedDateTime {
        d.at(hour, 0, 0, 0)
            .to_zoned_datetime(TimeZone::UTC)
            .unwrap()
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn dated_names_follow_ossecs_tree() {
        assert_eq!(
            dated_path(
                Path::new("/var/palisade/logs/alerts/alerts.log"),
                date(2026, 11, 3)
            ),
            Path::new("/var/palisade/logs/alerts/2026/Nov/alerts-03.log")
        );
        assert_eq!(
            dated_path(Path::new("a/alerts.json"), date(2027, 1, 31)),
            Path::new("a/2027/Jan/alerts-31.json")
        );
    }

    #[test]
    fn the_day_changes_and_the_current_name_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.log");
        let d1 = date(2026, 11, 30);
        let mut f = DailyFile::open(&path, None, &zoned(d1, 23)).unwrap();
        f.write(d1, b"first\n").unwrap();
        f.flush().unwrap();
        assert_eq!(read(&path), "first\n");
        let d2 = date(2026, 12, 1);
        f.write(d2, b"second\n").unwrap();
        f.flush().unwrap();
        assert_eq!(read(&path), "second\n");
        assert_eq!(read(&dir.path().join("2026/Nov/alerts-30.log")), "first\n");
        // A quiet day leaves no empty dated file.
        f.roll(date(2026, 12, 2)).unwrap();
        f.roll(date(2026, 12, 3)).unwrap();
        assert_eq!(read(&dir.path().join("2026/Dec/alerts-01.log")), "second\n");
        assert!(!dir.path().join("2026/Dec/alerts-02.log").exists());
        assert_eq!(read(&path), "");
    }

    #[test]
    fn a_file_left_from_an_earlier_day_is_rotated_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        fs::write(&path, "old\n").unwrap();
        let written = zoned(date(2026, 3, 9), 12);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::try_from(written.timestamp()).unwrap())
            .unwrap();
        let mut f = DailyFile::open(&path, None, &zoned(date(2026, 3, 11), 8)).unwrap();
        assert_eq!(read(&dir.path().join("2026/Mar/alerts-09.json")), "old\n");
        f.write(date(2026, 3, 11), b"new\n").unwrap();
        f.flush().unwrap();
        assert_eq!(read(&path), "new\n");
        // Written today: kept as the current file on the next start.
        drop(f);
        DailyFile::open(&path, None, &jiff::ZonedDateTime::now()).unwrap();
        assert_eq!(read(&path), "new\n");
    }

    #[test]
    fn only_keep_days_of_dated_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.log");
        let first = date(2026, 12, 28);
        let mut f = DailyFile::open(&path, Some(2), &zoned(first, 0)).unwrap();
        let mut day = first;
        for _ in 0..6 {
            f.write(day, format!("{day}\n").as_bytes()).unwrap();
            day = day.tomorrow().unwrap();
        }
        f.flush().unwrap();
        // Today is Jan 2 (current file); Dec 31 and Jan 1 are the two kept.
        assert_eq!(read(&path), "2027-01-02\n");
        assert_eq!(
            read(&dir.path().join("2027/Jan/alerts-01.log")),
            "2027-01-01\n"
        );
        assert_eq!(
            read(&dir.path().join("2026/Dec/alerts-31.log")),
            "2026-12-31\n"
        );
        for gone in [
            "2026/Dec/alerts-28.log",
            "2026/Dec/alerts-29.log",
            "2026/Dec/alerts-30.log",
        ] {
            assert!(!dir.path().join(gone).exists(), "{gone}");
        }
    }

    fn published(id: i64, level: u32, log_it: bool) -> StoredAlert {
        let mut stored = crate::store::fixtures::stored_alert(id, level);
        stored.alert.options.no_log = !log_it;
        stored.alert.groups = "web,web_scan,".into();
        stored.alert.description = "Web scan.".into();
        stored.alert.url = Some("/x".into());
        stored.alert.full_log = format!("GET /{id} 404").into_bytes();
        stored.alert.correlated = vec!["GET /earlier 404".into()];
        stored
    }

    #[test]
    fn the_writer_filters_renders_rotates_and_flushes_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let config = compile(
            RawAlertFiles {
                log_file: None,
                json_file: Some("alerts.json".into()),
                log_alert_level: Some(3),
                keep_days: None,
            },
            dir.path(),
            &mut Problems::new(),
        );
        let day = Arc::new(AtomicI64::new(0));
        let clock: Clock = {
            let day = day.clone();
            Arc::new(move || {
                let d = date(2026, 11, 28)
                    .checked_add(jiff::Span::new().days(day.load(Ordering::SeqCst)))
                    .unwrap();
                zoned(d, 12)
            })
        };
        let files = AlertFiles::start(
            &config,
            Rendering {
                email_alert_level: 7,
                manager: "central".into(),
                zone: TimeZone::UTC,
            },
            clock,
        )
        .unwrap()
        .unwrap();
        files.publish(&published(1, 10, true));
        files.publish(&published(2, 2, true)); // below log_alert_level
        files.publish(&published(3, 12, false)); // the rule has no_log
        files.publish(&published(4, 5, true));
        // Let the writer take the first day's alerts before the day changes.
        let log = dir.path().join("logs/alerts/alerts.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read(&log).matches("** Alert").count() < 2 {
            assert!(std::time::Instant::now() < deadline, "nothing written");
            std::thread::sleep(Duration::from_millis(10));
        }
        day.store(1, Ordering::SeqCst);
        files.publish(&published(5, 7, true));
        files.close();
        files.publish(&published(6, 7, true)); // after close: dropped, no panic

        let old_log = read(&dir.path().join("logs/alerts/2026/Nov/alerts-28.log"));
        let headers: Vec<&str> = old_log
            .lines()
            .filter(|l| l.starts_with("** Alert"))
            .collect();
        assert_eq!(
            headers,
            [
                "** Alert 1764324001.1: mail  - web,web_scan,",
                "** Alert 1764324001.4: - web,web_scan,"
            ]
        );
        let new_log = read(&log);
        assert!(
            new_log.starts_with("** Alert 1764324001.5: mail  - web,web_scan,\n"),
            "{new_log}"
        );
        assert!(
            new_log.ends_with("GET /5 404\nGET /earlier 404\n\n"),
            "{new_log}"
        );

        let old_json = read(&dir.path().join("2026/Nov/alerts-28.json"));
        let ids: Vec<String> = old_json
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect();
        assert_eq!(ids, ["\"1764324001.1\"", "\"1764324001.4\""]);
        let new_json = read(&dir.path().join("alerts.json"));
        let v: serde_json::Value = serde_json::from_str(new_json.trim_end()).unwrap();
        assert_eq!(v["rule"]["mail"], true);
        assert_eq!(v["full_log"], "GET /5 404");
        assert!(new_json.ends_with('\n') && new_json.lines().count() == 1);
    }

    #[test]
    fn an_alert_judged_in_the_wazuh_dialect_is_written_in_wazuhs_shape() {
        let dir = tempfile::tempdir().unwrap();
        let config = compile(
            RawAlertFiles {
                log_file: Some("".into()),
                json_file: Some("alerts.json".into()),
                log_alert_level: None,
                keep_days: None,
            },
            dir.path(),
            &mut Problems::new(),
        );
        let clock: Clock = Arc::new(|| zoned(date(2026, 11, 28), 12));
        let rendering = Rendering {
            email_alert_level: 7,
            manager: "central".into(),
            zone: TimeZone::UTC,
        };
        let files = AlertFiles::start(&config, rendering, clock)
            .unwrap()
            .unwrap();
        let mut stored = published(1, 5, true);
        stored.alert.groups = "sshd,pci_dss_10.2.4,".into();
        stored.alert.wazuh = Some(Box::new(palisade_engine::alert::WazuhDetail {
            mitre: vec!["T1110".into()],
            firedtimes: Some(3),
            data: vec![("win.system.eventID".into(), "4625".into())],
            ..Default::default()
        }));
        files.publish(&stored);
        files.close();
        let json = read(&dir.path().join("alerts.json"));
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(v["rule"]["groups"], serde_json::json!(["sshd"]));
        assert_eq!(v["rule"]["pci_dss"], serde_json::json!(["10.2.4"]));
        assert_eq!(v["rule"]["firedtimes"], 3);
        assert_eq!(v["rule"]["mitre"]["tactic"][0], "Credential Access");
        assert_eq!(v["data"]["win"]["system"]["eventID"], "4625");
    }

    #[test]
    fn the_section_has_ossecs_defaults_and_is_checked() {
        let base = Path::new("/etc/palisade");
        let mut errors = Problems::new();
        let c = compile(RawAlertFiles::default(), base, &mut errors);
        assert_eq!(
            c.log_file.as_deref(),
            Some(base.join(DEFAULT_LOG_FILE).as_path())
        );
        assert_eq!(
            (c.json_file.clone(), c.log_alert_level, c.keep_days),
            (None, 1, None)
        );
        let off = compile(
            RawAlertFiles {
                log_file: Some("".into()),
                ..Default::default()
            },
            base,
            &mut errors,
        );
        assert!(!off.enabled());
        assert!(errors.is_empty());
        compile(
            RawAlertFiles {
                log_file: Some("a.log".into()),
                json_file: Some("a.log".into()),
                log_alert_level: Some(20),
                keep_days: None,
            },
            base,
            &mut errors,
        );
        assert_eq!(
            errors.keys(),
            ["alerts.json_file", "alerts.log_alert_level"],
            "{errors:?}"
        );
    }
}
