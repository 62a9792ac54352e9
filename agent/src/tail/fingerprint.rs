//! A file's fingerprint: a checksum of its first bytes (up to
//! [`FINGERPRINT_BYTES`]). Device and inode say which file a handle or a
//! checkpoint refers to, but an inode is reused once its file is deleted;
//! the fingerprint tells the new file from the old one, as vector's
//! `FirstLinesChecksum` does. The covered length grows with the file until
//! it reaches the maximum, so even a short new file has one.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Most leading bytes covered.
pub const FINGERPRINT_BYTES: u64 = 256;

/// A checksum of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// Bytes covered (0: an empty file, matches anything).
    pub len: u64,
    /// FNV-1a (64 bit) of those bytes.
    pub sum: u64,
}

impl Fingerprint {
    /// The fingerprint of a file of `size` bytes.
    pub fn of(file: &File, size: u64) -> std::io::Result<Self> {
        let head = read_head(file, size.min(FINGERPRINT_BYTES))?;
        Ok(Self {
            len: head.len() as u64,
            sum: fnv1a(&head),
        })
    }

    /// Whether `file` (now `size` bytes) still starts with the bytes this
    /// fingerprint covers; if so, its fingerprint over the current head.
    pub fn recheck(&self, file: &File, size: u64) -> std::io::Result<Option<Self>> {
        if size < self.len {
            return Ok(None);
        }
        let head = read_head(file, size.min(FINGERPRINT_BYTES))?;
        let covered = usize::try_from(self.len).unwrap_or(usize::MAX);
        if covered > 0 && (head.len() < covered || fnv1a(&head[..covered]) != self.sum) {
            return Ok(None);
        }
        Ok(Some(Self {
            len: head.len() as u64,
            sum: fnv1a(&head),
        }))
    }

    /// This fingerprint grown over `head`, the file's first bytes as just
    /// read (up to [`FINGERPRINT_BYTES`] of them): `None` if `head` does
    /// not start with the bytes it covers; itself if `head` is shorter
    /// than they are.
    pub fn extended_by(&self, head: &[u8]) -> Option<Self> {
        let covered = usize::try_from(self.len).unwrap_or(usize::MAX);
        if head.len() < covered {
            return Some(*self);
        }
        if covered > 0 && fnv1a(&head[..covered]) != self.sum {
            return None;
        }
        let take = head.len().min(FINGERPRINT_BYTES as usize);
        Some(Self {
            len: take as u64,
            sum: fnv1a(&head[..take]),
        })
    }
}

fn read_head(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read_at(&mut buf[filled..], filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn grows_with_the_file_and_notices_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"first line\n").unwrap();
        let file = File::open(&path).unwrap();
        let a = Fingerprint::of(&file, 11).unwrap();
        assert_eq!(a.len, 11);
        f.write_all(&[b'z'; 400]).unwrap();
        let b = a.recheck(&file, 411).unwrap().expect("same file");
        assert_eq!(b.len, FINGERPRINT_BYTES);
        // Rewritten in place with other content: not the same file.
        std::fs::write(&path, [b'q'; 500]).unwrap();
        assert_eq!(b.recheck(&file, 500).unwrap(), None);
        // Shorter than what was covered: not the same file.
        std::fs::write(&path, b"fi").unwrap();
        assert_eq!(a.recheck(&file, 2).unwrap(), None);
    }

    #[test]
    fn extended_by_the_bytes_read_from_the_start() {
        let empty = Fingerprint::default();
        let a = empty.extended_by(b"first line\n").expect("empty matches");
        assert_eq!(a.len, 11);
        // Grows to the maximum and no further.
        let long = [b'x'; 600];
        let mut head = b"first line\n".to_vec();
        head.extend_from_slice(&long);
        let b = a.extended_by(&head).expect("same start");
        assert_eq!(b.len, FINGERPRINT_BYTES);
        // Another start is another file.
        assert_eq!(a.extended_by(b"other line\n"), None);
        // Fewer bytes than it covers: nothing to tell, unchanged.
        assert_eq!(b.extended_by(b"first"), Some(b));
        // What a file written from the same bytes would get.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &head).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(Fingerprint::of(&file, head.len() as u64).unwrap(), b);
    }

    #[test]
    fn empty_matches_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        let fp = Fingerprint::default().recheck(&file, 3).unwrap().unwrap();
        assert_eq!(fp, Fingerprint::of(&file, 3).unwrap());
    }
}
