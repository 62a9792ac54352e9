//! Cutting bytes read from a file into events. Pure, so the rules are
//! tested without files: a record is one line (or, for `multi-line:N`,
//! N lines joined by a space, as OSSEC's read_multiline does); only whole
//! records are consumed, so a checkpoint never splits one. A record that
//! is already longer than the limit before it is complete is cut there,
//! flagged, and the rest of its last line is skipped: a giant line never
//! stalls the lines after it and is never dropped silently.

/// One event's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The line (without its terminator), at most the limit long.
    pub line: Vec<u8>,
    /// It was cut at the limit.
    pub truncated: bool,
}

/// What [`frame`] made of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    /// Complete records, in order.
    pub records: Vec<Record>,
    /// Bytes of the buffer they used (the next read starts there).
    pub consumed: usize,
    /// The buffer ended inside an over-long line whose head was emitted.
    pub skipping: bool,
}

/// Frames `buf`, which starts where the previous call stopped (`skipping`
/// as it returned), into at most `limit` records of `group` lines each,
/// cut at `max` bytes.
pub fn frame(buf: &[u8], skipping: bool, max: usize, group: usize, limit: usize) -> Framed {
    let group = group.max(1);
    let mut records = Vec::new();
    let mut pos = 0;
    let mut skipping = skipping;
    while records.len() < limit && pos < buf.len() {
        if skipping {
            match memchr::memchr(b'\n', &buf[pos..]) {
                Some(nl) => {
                    pos += nl + 1;
                    skipping = false;
                    continue;
                }
                None => {
                    pos = buf.len();
                    break;
                }
            }
        }
        let start = pos;
        let mut end = pos;
        let mut lines: Vec<&[u8]> = Vec::with_capacity(group);
        while lines.len() < group {
            match memchr::memchr(b'\n', &buf[end..]) {
                Some(nl) => {
                    let mut line = &buf[end..end + nl];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    lines.push(line);
                    end += nl + 1;
                }
                None => break,
            }
        }
        if lines.len() == group {
            records.push(join(&lines, max, false));
            pos = end;
            continue;
        }
        if buf.len() - start <= max {
            break; // an incomplete record that may still fit: wait for more
        }
        // Too long to ever fit: emit its head now.
        let partial = &buf[end..];
        if !partial.is_empty() {
            lines.push(partial);
            skipping = true;
        }
        records.push(join(&lines, max, true));
        pos = buf.len();
    }
    Framed {
        records,
        consumed: pos,
        skipping,
    }
}

fn join(lines: &[&[u8]], max: usize, cut: bool) -> Record {
    let mut line = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>().min(max));
    let mut truncated = cut;
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        line.extend_from_slice(l);
        if line.len() > max {
            truncated = true;
            break;
        }
    }
    if line.len() > max {
        line.truncate(max);
        truncated = true;
    }
    Record { line, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &Framed) -> Vec<(String, bool)> {
        f.records
            .iter()
            .map(|r| (String::from_utf8_lossy(&r.line).into_owned(), r.truncated))
            .collect()
    }

    #[test]
    fn complete_lines_only() {
        let f = frame(b"a\nbb\r\nccc", false, 100, 1, 10);
        assert_eq!(lines(&f), vec![("a".into(), false), ("bb".into(), false)]);
        assert_eq!(f.consumed, 6);
        assert!(!f.skipping);
    }

    #[test]
    fn the_record_limit_stops_early() {
        let f = frame(b"a\nb\nc\n", false, 100, 1, 2);
        assert_eq!(f.records.len(), 2);
        assert_eq!(f.consumed, 4);
    }

    #[test]
    fn a_terminated_long_line_is_cut_and_flagged() {
        let mut buf = vec![b'x'; 50];
        buf.extend_from_slice(b"\nnext\n");
        let f = frame(&buf, false, 10, 1, 10);
        assert_eq!(
            lines(&f),
            vec![("x".repeat(10), true), ("next".into(), false)]
        );
        assert_eq!(f.consumed, buf.len());
    }

    #[test]
    fn an_unterminated_long_line_is_emitted_then_skipped() {
        let f = frame(&[b'y'; 30], false, 10, 1, 10);
        assert_eq!(lines(&f), vec![("y".repeat(10), true)]);
        assert_eq!(f.consumed, 30);
        assert!(f.skipping);
        // The rest of it arrives later, then the next line.
        let f = frame(b"yyyy\nafter\n", true, 10, 1, 10);
        assert_eq!(lines(&f), vec![("after".into(), false)]);
        assert!(!f.skipping);
    }

    #[test]
    fn a_short_unterminated_line_waits() {
        let f = frame(b"partial", false, 10, 1, 10);
        assert!(f.records.is_empty());
        assert_eq!(f.consumed, 0);
    }

    #[test]
    fn bytes_pass_as_they_are() {
        let f = frame(b"\0\0\0\n\xff\xfe ok\n", false, 100, 1, 10);
        assert_eq!(f.records[0].line, b"\0\0\0");
        assert_eq!(f.records[1].line, b"\xff\xfe ok");
    }

    #[test]
    fn multi_line_joins_groups_with_a_space() {
        let f = frame(b"a\nb\nc\nd\ne\nf\ng\n", false, 100, 3, 10);
        assert_eq!(
            lines(&f),
            vec![("a b c".into(), false), ("d e f".into(), false)]
        );
        assert_eq!(f.consumed, 12, "the incomplete group g waits");
    }

    #[test]
    fn an_over_long_group_is_cut() {
        let f = frame(b"aaaa\nbbbb\ncccc\n", false, 7, 3, 10);
        assert_eq!(lines(&f), vec![("aaaa bb".into(), true)]);
    }
}
