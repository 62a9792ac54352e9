//! The tailer as a whole, against real files: rotations, truncations,
//! restarts and their races, and a proptest of the state machine.

use super::*;
use std::collections::HashSet;
use std::io::Write;

struct Rig {
    dir: tempfile::TempDir,
    spool: Spool,
    tailer: Option<Tailer>,
    files: Vec<Localfile>,
    options: TailOptions,
}

impl Rig {
    async fn new(files: &[(&str, &str)], read_from_start: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool.db")).await.unwrap();
        let files: Vec<Localfile> = files
            .iter()
            .map(|(name, format)| Localfile {
                location: dir.path().join(name),
                log_format: format.to_string(),
            })
            .collect();
        let options = TailOptions {
            read_from_start,
            max_line_length: 300,
            rotate_wait: Duration::ZERO,
            ..TailOptions::default()
        };
        let mut rig = Self {
            dir,
            spool,
            tailer: None,
            files,
            options,
        };
        rig.start();
        rig
    }

    fn start(&mut self) {
        self.tailer = Some(Tailer::new(
            &self.files,
            self.spool.clone(),
            self.options.clone(),
            Arc::new(Notify::new()),
            Arc::new(AtomicU64::new(0)),
        ));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        f.write_all(text).unwrap();
    }

    async fn poll(&mut self) {
        self.tailer.as_mut().unwrap().poll_once().await.unwrap();
    }

    async fn lines(&self) -> Vec<String> {
        self.spool
            .pending(0, u32::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.event.line).into_owned())
            .collect()
    }
}

#[tokio::test]
async fn first_seen_files_start_at_their_end_unless_asked() {
    let mut rig = Rig::new(&[("a.log", "syslog")], false).await;
    rig.write("a.log", b"old\n");
    rig.start();
    rig.poll().await;
    rig.write("a.log", b"new\n");
    rig.poll().await;
    assert_eq!(rig.lines().await, vec!["new"]);

    let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
    rig.write("a.log", b"old\n");
    rig.poll().await;
    assert_eq!(rig.lines().await, vec!["old"]);
}

#[tokio::test]
async fn globs_pick_up_files_that_appear_later_from_their_start() {
    let mut rig = Rig::new(&[("*.log", "nginx")], false).await;
    rig.write("a.log", b"before start\n");
    rig.start();
    rig.poll().await;
    rig.write("b.log", b"b1\n");
    rig.write("a.log", b"a1\n");
    rig.write("c.txt", b"not matched\n");
    rig.poll().await;
    let events = rig.spool.pending(0, 100).await.unwrap();
    let mut got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.event.location.clone(),
                String::from_utf8_lossy(&e.event.line).into_owned(),
                e.event.log_format.clone(),
            )
        })
        .collect();
    got.sort();
    let a = rig.path("a.log").display().to_string();
    let b = rig.path("b.log").display().to_string();
    assert_eq!(
        got,
        vec![
            (a, "a1".into(), "nginx".into()),
            (b, "b1".into(), "nginx".into())
        ]
    );
}

#[tokio::test]
async fn rename_rotation_finishes_the_old_file_first() {
    let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
    rig.write("a.log", b"1\n");
    rig.poll().await;
    rig.write("a.log", b"2\n");
    std::fs::rename(rig.path("a.log"), rig.path("a.log.1")).unwrap();
    rig.write("a.log.1", b"3\n"); // the writer has not reopened yet
    rig.write("a.log", b"4\n");
    rig.poll().await;
    assert_eq!(rig.lines().await, vec!["1", "2", "3", "4"]);
    let location = rig.path("a.log").display().to_string();
    for e in rig.spool.pending(0, 100).await.unwrap() {
        assert_eq!(e.event.location, location);
    }
}

#[tokio::test]
async fn a_restart_finishes_a_file_rotated_while_down() {
    let mut rig = Rig::new(&[("a.log", "syslog")], false).await;
    rig.write("a.log", b"seen before start\n");
    rig.poll().await;
    rig.write("a.log", b"1\n");
    rig.poll().await;
    rig.tailer = None; // down
    rig.write("a.log", b"2\n");
    std::fs::rename(rig.path("a.log"), rig.path("a.log.1")).unwrap();
    rig.write("a.log", b"3\n");
    rig.start();
    rig.poll().await;
    assert_eq!(rig.lines().await, vec!["1", "2", "3"]);
}

#[tokio::test]
async fn over_long_and_odd_lines_pass_and_do_not_stall() {
    let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
    let mut text = vec![b'x'; 5000];
    text.push(b'\n');
    text.extend_from_slice(&[0, 0, 0, b'\n']);
    text.extend_from_slice(b"\xff\xfe\n");
    text.extend_from_slice(b"after\n");
    rig.write("a.log", &text);
    rig.poll().await;
    let events = rig.spool.pending(0, 100).await.unwrap();
    let got: Vec<(Vec<u8>, bool)> = events
        .into_iter()
        .map(|e| (e.event.line, e.event.truncated))
        .collect();
    assert_eq!(
        got,
        vec![
            (vec![b'x'; 300], true),
            (vec![0, 0, 0], false),
            (b"\xff\xfe".to_vec(), false),
            (b"after".to_vec(), false)
        ]
    );
}

#[tokio::test]
async fn multi_line_groups_survive_a_restart() {
    let mut rig = Rig::new(&[("a.log", "multi-line:2")], true).await;
    rig.write("a.log", b"a\nb\nc\n");
    rig.poll().await;
    rig.start();
    rig.write("a.log", b"d\n");
    rig.poll().await;
    assert_eq!(rig.lines().await, vec!["a b", "c d"]);
    let events = rig.spool.pending(0, 100).await.unwrap();
    assert_eq!(events[0].event.log_format, "multi-line");
}

#[tokio::test]
async fn a_reused_inode_is_a_new_file() {
    let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
    rig.write("a.log", b"first file, long enough\n");
    rig.poll().await;
    rig.tailer = None;
    // Same size, other content, very likely the same inode.
    std::fs::remove_file(rig.path("a.log")).unwrap();
    rig.write("a.log", b"other file, long enough\n");
    rig.start();
    rig.poll().await;
    assert_eq!(
        rig.lines().await,
        vec!["first file, long enough", "other file, long enough"]
    );
}

#[tokio::test]
async fn two_copy_truncates_between_polls() {
    let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
    let block = |tag: &str| -> Vec<u8> {
        (0..300)
            .flat_map(|i| format!("{tag} {i:05} GET /index.html 200\n").into_bytes())
            .collect()
    };
    rig.write("a.log", &block("c"));
    rig.poll().await;
    rig.write("a.log", &block("d"));
    let truncate = |p: PathBuf| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(0)
            .unwrap()
    };
    std::fs::copy(rig.path("a.log"), rig.path("a.log.1")).unwrap();
    truncate(rig.path("a.log"));
    rig.write("a.log", &block("e"));
    std::fs::rename(rig.path("a.log.1"), rig.path("a.log.2")).unwrap();
    std::fs::copy(rig.path("a.log"), rig.path("a.log.1")).unwrap();
    truncate(rig.path("a.log"));
    rig.write("a.log", &block("f"));
    rig.poll().await;
    let lines = rig.lines().await;
    let count = |tag: &str| lines.iter().filter(|l| l.starts_with(tag)).count();
    assert_eq!(
        (count("c "), count("d "), count("e "), count("f ")),
        (300, 300, 300, 300)
    );
    assert!(lines[300].starts_with("d 00000"), "{}", lines[300]);
    assert!(lines[600].starts_with("e 00000"), "{}", lines[600]);
}

/// Rotations racing the polls (a writer thread, polls back to back):
/// a truncation that lands between taking a file's size and reading
/// it must not pass the new file's bytes off as the old file's.
#[tokio::test]
async fn rotations_racing_the_polls_lose_and_repeat_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("palisade_agent=debug")
        .with_test_writer()
        .try_init();
    for copy in [true, false] {
        let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
        rig.write("a.log", b"");
        rig.poll().await;
        let path = rig.path("a.log");
        let writer = std::thread::spawn(move || {
            let rotated = |n: usize| path.with_file_name(format!("a.log.{n}"));
            let mut written = Vec::new();
            for round in 0..12 {
                for _ in 0..6 {
                    let mut text = String::new();
                    for _ in 0..150 {
                        let line = format!("r{round:02} {:06} GET /index.html 200", written.len());
                        text.push_str(&line);
                        text.push('\n');
                        written.push(line);
                    }
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .unwrap();
                    f.write_all(text.as_bytes()).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                }
                // Every generation is kept (none is overwritten).
                for n in (1..=round).rev() {
                    if rotated(n).exists() {
                        std::fs::rename(rotated(n), rotated(n + 1)).unwrap();
                    }
                }
                if copy {
                    std::fs::copy(&path, rotated(1)).unwrap();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                } else {
                    std::fs::rename(&path, rotated(1)).unwrap();
                    std::fs::write(&path, b"").unwrap();
                }
            }
            written
        });
        while !writer.is_finished() {
            rig.poll().await;
            tokio::task::yield_now().await;
        }
        let written = writer.join().unwrap();
        rig.poll().await;
        rig.poll().await;
        let lines = rig.lines().await;
        let mut seen = HashSet::new();
        let repeated = lines.iter().filter(|l| !seen.insert(*l)).count();
        let missing = written.iter().filter(|l| !seen.contains(l)).count();
        let mut seen2 = HashSet::new();
        let reps: Vec<&String> = lines.iter().filter(|l| !seen2.insert(*l)).collect();
        assert_eq!(
            (missing, repeated),
            (0, 0),
            "copy: {copy} {:?} {:?}",
            reps.first(),
            reps.last()
        );
        // Within a file, lines keep their order; which of two files
        // rotated within one clock tick goes first is not known.
        let mut last: HashMap<&str, &str> = HashMap::new();
        for l in &lines {
            let previous = last.insert(&l[..3], l.as_str());
            assert!(
                previous < Some(l.as_str()),
                "copy: {copy}: {l} after {previous:?}"
            );
        }
    }
}

// The state machine: every line written arrives exactly once, in
// order, whatever rotations, truncations, deletions and restarts
// happen between polls (vector's FileWatcherAction, as a proptest).
#[derive(Debug, Clone)]
enum Action {
    Write(u8),
    RenameRotate,
    CopyTruncate,
    /// Truncate in place once everything was read.
    ReadThenTruncate,
    /// Delete once everything was read.
    ReadThenDelete,
    Read,
    Restart,
}

fn action() -> impl proptest::strategy::Strategy<Value = Action> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1u8..4).prop_map(Action::Write),
        1 => Just(Action::RenameRotate),
        1 => Just(Action::CopyTruncate),
        1 => Just(Action::ReadThenTruncate),
        1 => Just(Action::ReadThenDelete),
        3 => Just(Action::Read),
        1 => Just(Action::Restart),
    ]
}

fn shift(rig: &Rig) {
    for n in (1..=6).rev() {
        let from = rig.path(&format!("a.log.{n}"));
        if from.exists() {
            std::fs::rename(&from, rig.path(&format!("a.log.{}", n + 1))).unwrap();
        }
    }
}

async fn play(actions: Vec<Action>) {
    let mut rig = Rig::new(&[("a.log", "syslog")], true).await;
    // The agent knew the file before anything happened to it.
    rig.write("a.log", b"");
    rig.poll().await;
    let mut written = Vec::new();
    for a in actions {
        match a {
            Action::Write(n) => {
                for _ in 0..n {
                    let line = format!(
                        "line {:04} {}",
                        written.len(),
                        "p".repeat(written.len() % 7)
                    );
                    rig.write("a.log", format!("{line}\n").as_bytes());
                    written.push(line);
                }
            }
            Action::RenameRotate => {
                if rig.path("a.log").exists() {
                    shift(&rig);
                    std::fs::rename(rig.path("a.log"), rig.path("a.log.1")).unwrap();
                }
            }
            Action::CopyTruncate => {
                if rig.path("a.log").exists() {
                    shift(&rig);
                    std::fs::copy(rig.path("a.log"), rig.path("a.log.1")).unwrap();
                    std::fs::File::create(rig.path("a.log")).unwrap();
                }
            }
            Action::ReadThenTruncate => {
                rig.poll().await;
                if rig.path("a.log").exists() {
                    std::fs::File::create(rig.path("a.log")).unwrap();
                }
            }
            Action::ReadThenDelete => {
                rig.poll().await;
                let _ = std::fs::remove_file(rig.path("a.log"));
            }
            Action::Read => rig.poll().await,
            Action::Restart => rig.start(),
        }
    }
    rig.poll().await;
    rig.poll().await;
    assert_eq!(rig.lines().await, written);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 96, ..Default::default() })]
    #[test]
    fn every_line_arrives_once_in_order(actions in proptest::collection::vec(action(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(play(actions));
    }
}
