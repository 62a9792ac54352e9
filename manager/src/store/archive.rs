//! The archive's row format (`logall`): one row per stored batch, its
//! events packed in one blob.
//!
//! Why: a row per event cost more than everything else in a batch commit
//! (sqlx binds, SQLite's b-tree and unique index per line: 23 ms for 2,000
//! events, a ceiling near 87,000 lines/s whatever the rest of the manager
//! did). One INSERT of one blob per batch costs little more than copying
//! the lines. Nobody queries the archive by line: it is read back whole
//! (tests, `migrate-store`) and pruned oldest first, by age and size, which
//! whole batches serve as well.
//!
//! Layout, version 1 (integers big-endian, as PostgreSQL's `int8send`
//! writes them, so migration 0120 builds the same bytes in SQL):
//!
//! ```text
//! u8 version (1)
//! per event, in sequence order:
//!   i64 sequence, i64 read_at, u8 flags
//!   unless flags & SAME_ORIGIN: u32 length + location, u32 length + log_format
//!   u32 length + line
//! ```
//!
//! `SAME_ORIGIN` says the location and format are the previous event's
//! (a batch usually names one file): the writer sets it, the migration
//! does not. The row's own columns hold what all events share: agent,
//! spool epoch, arrival time, the first and last sequence and the count.

use super::{ArchivedEvent, IncomingEvent};

/// The layout's version byte.
const VERSION: u8 = 1;
/// The agent (or the manager, at its limit) cut the line.
const TRUNCATED: u8 = 1;
/// `read_at` was out of range and holds the arrival time.
const READ_AT_CLAMPED: u8 = 2;
/// Location and format are the previous event's (and not repeated).
const SAME_ORIGIN: u8 = 4;
/// Every flag this version knows.
const KNOWN_FLAGS: u8 = TRUNCATED | READ_AT_CLAMPED | SAME_ORIGIN;
/// Fixed bytes of an event: sequence, read_at, flags, the line's length.
const EVENT_FIXED: usize = 8 + 8 + 1 + 4;

/// Bytes an archived batch counts for `[retention] archive_max_size`
/// beside its blob: the row's other columns and its index entry.
pub const ARCHIVE_BATCH_OVERHEAD: u64 = 64;

/// What a batch of `blob_len` bytes counts for `archive_max_size`
/// (migration 0120 counts the same).
pub fn archive_batch_bytes(blob_len: usize) -> u64 {
    blob_len as u64 + ARCHIVE_BATCH_OVERHEAD
}

/// Packs `events` (in sequence order) into one blob; a field too long
/// for its length prefix is an error (no line or location comes near
/// 4 GiB: the limits cut far below).
pub(crate) fn pack(events: &[&IncomingEvent<'_>]) -> Result<Vec<u8>, String> {
    let size = 1 + events
        .iter()
        .map(|e| EVENT_FIXED + e.line.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size + 64);
    out.push(VERSION);
    let mut origin: Option<(&str, &str)> = None;
    for e in events {
        let same = origin == Some((e.location, e.log_format));
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(e.truncated, TRUNCATED)
            | flag(e.read_at_clamped, READ_AT_CLAMPED)
            | flag(same, SAME_ORIGIN);
        out.extend_from_slice(&i64::try_from(e.sequence).unwrap_or(i64::MAX).to_be_bytes());
        out.extend_from_slice(&e.read_at.to_be_bytes());
        out.push(flags);
        if !same {
            put_field(&mut out, e.location.as_bytes(), "location")?;
            put_field(&mut out, e.log_format.as_bytes(), "log format")?;
            origin = Some((e.location, e.log_format));
        }
        put_field(&mut out, e.line, "line")?;
    }
    Ok(out)
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), String> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| format!("an archived {what} of {} bytes is too long", bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Unpacks a blob of agent `agent_id`'s batch received at `received_at`
/// into `out`, in order. A blob this version cannot read is an error
/// naming what is wrong (a damaged database, never input).
pub(crate) fn unpack(
    blob: &[u8],
    agent_id: &str,
    received_at: i64,
    out: &mut Vec<ArchivedEvent>,
) -> Result<(), String> {
    let mut r = Reader { blob, at: 0 };
    let version = r.take(1)?[0];
    if version != VERSION {
        return Err(format!("archive layout version {version} is unknown"));
    }
    let mut origin: Option<(String, String)> = None;
    while r.at < blob.len() {
        let sequence = r.i64()?;
        let read_at = r.i64()?;
        let flags = r.take(1)?[0];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(format!("unknown flags {flags:#04x} at byte {}", r.at - 1));
        }
        let (location, log_format) = if flags & SAME_ORIGIN != 0 {
            origin
                .clone()
                .ok_or_else(|| "the first event refers to a previous location".to_string())?
        } else {
            let location = r.text("location")?;
            let log_format = r.text("log format")?;
            origin = Some((location.clone(), log_format.clone()));
            (location, log_format)
        };
        let line = r.field()?.to_vec();
        out.push(ArchivedEvent {
            agent_id: agent_id.to_string(),
            sequence: u64::try_from(sequence).unwrap_or(0),
            location,
            log_format,
            read_at,
            read_at_clamped: flags & READ_AT_CLAMPED != 0,
            received_at,
            line,
            truncated: flags & TRUNCATED != 0,
        });
    }
    Ok(())
}

/// A cursor over a blob; every read checks the length left.
struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.blob.len())
            .ok_or_else(|| {
                format!(
                    "cut short: {n} bytes wanted at byte {} of {}",
                    self.at,
                    self.blob.len()
                )
            })?;
        let bytes = &self.blob[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn i64(&mut self) -> Result<i64, String> {
        let bytes = self.take(8)?;
        Ok(i64::from_be_bytes(bytes.try_into().unwrap_or_default()))
    }

    fn field(&mut self) -> Result<&'a [u8], String> {
        let bytes = self.take(4)?;
        let len = u32::from_be_bytes(bytes.try_into().unwrap_or_default());
        self.take(len as usize)
    }

    fn text(&mut self, what: &str) -> Result<String, String> {
        let at = self.at;
        String::from_utf8(self.field()?.to_vec())
            .map_err(|_| format!("the {what} at byte {at} is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(sequence: u64, location: &'a str, line: &'a [u8]) -> IncomingEvent<'a> {
        IncomingEvent {
            sequence,
            location,
            log_format: "syslog",
            read_at: -5 + sequence as i64,
            read_at_clamped: sequence == 2,
            truncated: sequence == 3,
            line,
        }
    }

    #[test]
    fn events_unpack_as_they_were_packed() {
        let big = vec![0xffu8; 1 << 20];
        let events = [
            event(1, "/var/log/a", b"\x1b[31mred\x00\r"),
            event(2, "/var/log/a", b""),
            event(3, "/var/log/b", &big),
            event(
                u64::from(u32::MAX) + 7,
                "/var/log/a",
                "é\u{202e}".as_bytes(),
            ),
        ];
        let refs: Vec<&IncomingEvent<'_>> = events.iter().collect();
        let blob = pack(&refs).unwrap();
        let mut out = Vec::new();
        unpack(&blob, "007", 99, &mut out).unwrap();
        assert_eq!(out.len(), events.len());
        for (got, e) in out.iter().zip(&events) {
            assert_eq!(got.agent_id, "007");
            assert_eq!(got.received_at, 99);
            assert_eq!(got.sequence, e.sequence);
            assert_eq!(got.location, e.location);
            assert_eq!(got.log_format, e.log_format);
            assert_eq!(got.read_at, e.read_at);
            assert_eq!(got.read_at_clamped, e.read_at_clamped);
            assert_eq!(got.truncated, e.truncated);
            assert_eq!(got.line, e.line);
        }
        // The second event repeats the first's location: not stored twice.
        assert_eq!(blob.windows(10).filter(|w| w == b"/var/log/a").count(), 2);
    }

    #[test]
    fn a_damaged_blob_is_an_error_not_a_panic() {
        let e = event(1, "/var/log/a", b"line");
        let blob = pack(&[&e]).unwrap();
        // Every cut but after the version byte alone (a batch of no events).
        for cut in (0..blob.len()).filter(|&cut| cut != 1) {
            let mut out = Vec::new();
            let result = unpack(&blob[..cut], "001", 0, &mut out);
            assert!(result.is_err(), "cut at {cut} read as {out:?}");
        }
        let mut bad = blob.clone();
        bad[0] = 9;
        assert!(
            unpack(&bad, "001", 0, &mut Vec::new())
                .unwrap_err()
                .contains("version 9")
        );
        let mut bad = blob.clone();
        bad[17] = 0x80;
        assert!(
            unpack(&bad, "001", 0, &mut Vec::new())
                .unwrap_err()
                .contains("flags")
        );
        let mut bad = blob;
        bad[17] = SAME_ORIGIN;
        assert!(unpack(&bad, "001", 0, &mut Vec::new()).is_err());
        // A length pointing far past the end.
        let mut huge = vec![VERSION];
        huge.extend_from_slice(&[0; 17]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            unpack(&huge, "001", 0, &mut Vec::new())
                .unwrap_err()
                .contains("cut short")
        );
    }

    mod migration {
        use super::*;
        use crate::store::backend::Pool;
        use crate::store::testing::both_backends;
        use crate::store::{Store, StoreLocation, migrator, on_pool, postgres_migrator};

        /// A pool on the test's database, outside a `Store` (for `on_pool!`).
        struct Raw {
            pool: Pool,
        }

        /// An archived event of the old layout (a row per event), as read back.
        fn old(sequence: u64, location: &str, received_at: i64, line: &[u8]) -> ArchivedEvent {
            ArchivedEvent {
                agent_id: "001".into(),
                sequence,
                location: location.into(),
                log_format: "syslog".into(),
                read_at: 1_764_324_001_000 + sequence as i64,
                read_at_clamped: sequence == 2,
                received_at,
                line: line.to_vec(),
                truncated: sequence == 3,
            }
        }

        both_backends! {
            async fn an_archive_of_rows_per_event_is_converted_to_batches(db) {
                let (raw, all) = match db.location() {
                    StoreLocation::Sqlite(path) => {
                        let options = sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(path)
                            .create_if_missing(true);
                        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                        (Raw { pool: Pool::Sqlite(pool) }, migrator())
                    }
                    StoreLocation::Postgres(url) => {
                        let pool = sqlx::PgPool::connect(url).await.unwrap();
                        (Raw { pool: Pool::Postgres(pool) }, postgres_migrator())
                    }
                };
                let before = sqlx::migrate::Migrator::with_migrations(
                    all.iter().filter(|m| m.version < 120).cloned().collect(),
                );
                // Two batches of spool epoch 0 (one of them naming two
                // files), one of epoch 1, every odd byte a line may hold.
                let big = vec![0xc3u8; 70_000];
                let epoch0 = [
                    old(1, "/var/log/a", 1000, b"\x00\xff\x1b[2J\r"),
                    old(2, "/var/log/\u{e9}", 1000, b""),
                    old(3, "/var/log/a", 1000, &big),
                    old(4, "/var/log/a", 2000, b"four"),
                ];
                let epoch1 = old(1, "/var/log/a", 3000, b"again one");
                on_pool!(raw, pool => {
                    before.run(pool).await.unwrap();
                    sqlx::query("INSERT INTO agents (id, name, cert_serial, registered_at, last_sequence, spool_epoch) VALUES ('001', 'web01', 'aa', 1, 1, 1)")
                        .execute(pool)
                        .await
                        .unwrap();
                    for (epoch, e) in epoch0.iter().map(|e| (0i64, e)).chain([(1, &epoch1)]) {
                        sqlx::query(
                            "INSERT INTO archive (agent_id, sequence, location, log_format, read_at, received_at, truncated, line, read_at_clamped, spool_epoch)
                             VALUES ('001', $1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(e.sequence as i64)
                        .bind(&e.location)
                        .bind(&e.log_format)
                        .bind(e.read_at)
                        .bind(e.received_at)
                        .bind(e.truncated)
                        .bind(&e.line)
                        .bind(e.read_at_clamped)
                        .bind(epoch)
                        .execute(pool)
                        .await
                        .unwrap();
                    }
                    pool.close().await;
                });
                let s: Store = db.open().await;
                let mut expected = epoch0.to_vec();
                expected.push(epoch1.clone());
                assert_eq!(s.archived_events(None).await.unwrap(), expected);
                assert_eq!(s.archive_count().await.unwrap(), 5);
                assert_eq!(s.scalar_for_test("SELECT COUNT(*) FROM archive").await, Some(3));
                let counted = s
                    .scalar_for_test("SELECT CAST(SUM(LENGTH(batch) + 64) AS BIGINT) FROM archive")
                    .await;
                assert_eq!(Some(s.archive_bytes().await.unwrap() as i64), counted);
                // The converted epoch-1 batch still keys out a replay of it.
                let e = |sequence| IncomingEvent {
                    sequence,
                    location: "/var/log/a",
                    log_format: "syslog",
                    read_at: 5,
                    read_at_clamped: false,
                    truncated: false,
                    line: b"new",
                };
                let stored = s.store_events("001", &[e(1), e(2)], &[], true).await.unwrap();
                assert_eq!(stored.highest, 2);
                let all = s.archived_events(None).await.unwrap();
                assert_eq!(all.len(), 6);
                assert_eq!((all[5].sequence, all[5].line.as_slice()), (2, &b"new"[..]));
            }
        }
    }
}
