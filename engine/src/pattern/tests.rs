use super::anchored::prefix_filter;
use super::*;

fn m(d: Dialect, p: &str, h: &str) -> bool {
    Pattern::new(d, p).is_ok_and(|pat| pat.is_match(h.as_bytes()))
}

// Pairs from OSSEC's own os_regex tests (ossec-hids src/tests/test_os_regex.c).
const MATCH_TRUE: &[(&str, &str)] = &[
    ("abc", "abcd"),
    ("abcd", "abcd"),
    ("a", "a"),
    ("a", "aa"),
    ("^a", "ab"),
    ("test", "testa"),
    ("test", "testest"),
    ("lalaila", "lalalalaila"),
    ("abc|cde", "cde"),
    ("^aa|ee|ii|oo|uu", "dfgdsii"),
    ("Abc", "abc"),
    ("ZBE", "zbe"),
    ("ABC", "ABc"),
    ("^A", "a"),
    ("a|E", "abcdef"),
    ("daniel", "daniel"),
    ("DANIeL", "daNIel"),
    ("^abc ", "abc "),
    ("ddd|eee|fff|ggg|ggg|hhh|iii", "iii"),
    ("kwo|fe|fw|wfW|edW|dwDF|WdW|dw|d|^la", "la"),
    ("^a", "a"),
    ("^ab$", "ab"),
    ("c$", "c"),
    ("c$", "lalalalac"),
    ("^bin$|^shell$", "bin"),
    ("^bin$|^shell$", "shell"),
    ("^bin$|^shell$|^ftp$", "shell"),
    ("^bin$|^shell$|^ftp$", "ftp"),
];
const MATCH_FALSE: &[(&str, &str)] = &[
    ("abc", "abb"),
    ("^ab", " ab"),
    ("test", "tes"),
    ("abcd", "abc"),
    ("abbb", "abb"),
    ("abbbbbbbb", "abbbbbbb"),
    ("a|b|c| ", "def"),
    ("lala$", "lalalalalal"),
    ("^ab$", "abc"),
    ("zzzz$", "zzzzzzzzzzzz "),
    ("^bin$|^shell$", "bina"),
    ("^bin$|^shell$", "shella"),
    ("^bin$|^shell$", "ashell"),
];
const REGEX_TRUE: &[(&str, &str)] = &[
    (r"\s+123", "  123"),
    (r"\s*123", "123"),
    (r"\s123", " 123"),
    (r"\w+\s+\w+", "a 1"),
    (r"\w+\d+\w+\s+", "ab12fb12fd12 "),
    (r"^\s*\w\s*\w+", "a   l a  a"),
    (r"\w+\s+\w+\d+\s$", "a aa11 "),
    (r"^su\S*: BAD su", "su: BAD SU dcid to root on /dev/ttyp0"),
    (r"^su\s*: BAD su", "su: BAD SU dcid to root on /dev/ttyp0"),
    (r"^abc\sabc", "abc abcd"),
    (r"^abc\s\s*abc", "abc abcd"),
    (r"^\s+\sl", "     lala"),
    (r"^\s*\sl", "     lala"),
    (r"^\s\s+l", "     lala"),
    (r"^\s+\s l", "     lala"),
    (r"^\s*\s lal\w$", "  lala"),
    (r"test123test\d+$", "test123test123"),
    (
        r"^kernel: \S+ \.+ SRC=\S+ DST=\S+ \.+ PROTO=\w+ SPT=\d+ DPT=\d+ ",
        "kernel: IPTABLE IN=eth0 OUT= MAC=ff:ff:ff:ff:ff:ff:00:03:93:db:2e:b4:08:00 SRC=10.4.11.40 DST=255.255.255.255 LEN=180 TOS=0x00 PREC=0x00 TTL=64 ID=4753 PROTO=UDP SPT=49320 DPT=2222 LEN=160",
    ),
    (r"test (\w+)la", "test abclala"),
    (r"(\w+) (\w+)", "wofl wofl"),
    (
        r"^\S+ [(\d+:\d+:\d+)] \.+ (\d+.\d+.\d+.\d+)\p*\d* -> (\d+.\d+.\d+.\d+)\p*",
        "snort: [1:469:3] ICMP PING NMAP [Classification: Attempted Information Leak] [Priority: 2]: {ICMP} 10.4.12.26 -> 10.4.10.231",
    ),
    (
        r"^\S+ [(\d+:\d+:\d+)] \.+ (\d+.\d+.\d+.\d+)\p*\d* -> (\d+.\d+.\d+.\d+)\p*",
        "snort: [1:1420:11] SNMP trap tcp [Classification: Attempted Information Leak] [Priority: 2]: {TCP} 10.4.12.26:37020 -> 10.4.10.231:162",
    ),
];
const REGEX_FALSE: &[(&str, &str)] = &[
    (r"\w+\s+\w+\d+\s$", "a aa11  "),
    (r"^\s+\s     l", "     lala"),
    (r"test123test\d+", "test123test"),
    (r"test123test\d+$", "test123test"),
    ("(lalala", "lalala"),
    (r"test123(\d)", "test123a"),
    (r"\(test)", "test"),
    (r"(\w+)(\d+)", "1 1"),
];

#[test]
fn ossec_os_match_pairs() {
    for (p, h) in MATCH_TRUE {
        assert!(
            m(Dialect::OsMatch, p, h),
            "OS_Match {p:?} should match {h:?}"
        );
    }
    for (p, h) in MATCH_FALSE {
        assert!(
            !m(Dialect::OsMatch, p, h),
            "OS_Match {p:?} must not match {h:?}"
        );
    }
}

#[test]
fn ossec_os_regex_pairs() {
    // OSSEC runs the OS_Match pairs through OS_Regex too.
    for (p, h) in MATCH_TRUE.iter().chain(REGEX_TRUE) {
        assert!(
            m(Dialect::OsRegex, p, h),
            "OS_Regex {p:?} should match {h:?}"
        );
    }
    for (p, h) in MATCH_FALSE.iter().chain(REGEX_FALSE) {
        assert!(
            !m(Dialect::OsRegex, p, h),
            "OS_Regex {p:?} must not match {h:?}"
        );
    }
}

fn caps(p: &str, h: &str) -> Vec<String> {
    let pat = Pattern::new(Dialect::OsRegex, p).unwrap();
    let found = pat.find(h.as_bytes()).unwrap();
    found
        .captures
        .iter()
        .flatten()
        .map(|r| h[r.clone()].to_string())
        .collect()
}

#[test]
fn ossec_extraction_pairs() {
    assert_eq!(caps(r"123(\w+\s+)abc", "123sdf    abc"), ["sdf    "]);
    assert_eq!(caps(r"123(\w+\s+)abc", "abc123sdf    abc"), ["sdf    "]);
    assert_eq!(
        caps(r"123 (\d+.\d.\d.\d\d*\d*)", "123 45.6.5.567"),
        ["45.6.5.567"]
    );
    assert_eq!(
        caps(
            r"from (\S*\d+.\d+.\d+.\d\d*\d*)",
            "sshd[21576]: Illegal user web14 from ::ffff:212.227.60.55"
        ),
        ["::ffff:212.227.60.55"]
    );
    assert_eq!(
        caps(
            r"^sshd[\d+]: Accepted \S+ for (\S+) from (\S+) port ",
            "sshd[21405]: Accepted password for root from 192.1.1.1 port 6023"
        ),
        ["root", "192.1.1.1"]
    );
    assert_eq!(
        caps(
            r": \((\S+)@(\S+)\) [",
            "pure-ftpd: (?@enigma.lab.ossec.net) [INFO] New connection from enigma.lab.ossec.net"
        ),
        ["?", "enigma.lab.ossec.net"]
    );
}

#[test]
fn laziness_and_translation() {
    assert_eq!(
        translate_os_regex(r"^(\S+) \d+ (\w+)").unwrap(),
        r"(?i-u)^([^ ]+?) [0-9]+? ([A-Za-z0-9@_-]+)"
    );
    assert_eq!(
        translate_os_regex(r"a\d+|b\w*").unwrap(),
        r"(?i-u)a[0-9]+|b[A-Za-z0-9@_-]*"
    );
    // `$` keeps the quantifier lazy (OSSEC's fix does not see through
    // the converted anchor), which gives the same match anyway.
    assert_eq!(translate_os_regex(r"\d+$").unwrap(), r"(?i-u)[0-9]+?\z");
    // Lazy inner quantifier: the capture stops at the first ':'.
    assert_eq!(caps(r"^(\S+): (\S+)", "a:b: c: d"), ["a:b", "c:"]);
    assert!(Pattern::new(Dialect::OsRegex, r"\q").is_err());
    assert!(Pattern::new(Dialect::OsRegex, "a\\").is_err());
    // `.` is literal, `\.` is any character.
    assert!(m(Dialect::OsRegex, "a.c", "a.c"));
    assert!(!m(Dialect::OsRegex, "a.c", "abc"));
    assert!(m(Dialect::OsRegex, r"a\.c", "abc"));
    // `+` not after a class is literal.
    assert!(m(Dialect::OsRegex, "a+", "A+"));
    assert!(!m(Dialect::OsRegex, "a+", "aa"));
    // \w includes - @ _ ; \s is only the space; \p is punctuation.
    assert!(m(Dialect::OsRegex, r"^\w+$", "a-b@c_d"));
    assert!(!m(Dialect::OsRegex, r"^a\sb$", "a\tb"));
    assert!(m(Dialect::OsRegex, r"^a\tb$", "a\tb"));
    assert!(m(Dialect::OsRegex, r"^\p+$", "()*+,-.:;<=>?[]!\"'#$%&{}|"));
    assert!(!m(Dialect::OsRegex, r"\p", "/\\^_~@`"));
    assert!(m(Dialect::OsRegex, r"\<a>", "<a>"));
    // Only `<` may be escaped, not `>`.
    assert!(Pattern::new(Dialect::OsRegex, r"\<a\>").is_err());
}

#[test]
fn literal_fast_paths() {
    for (d, p) in [
        (Dialect::OsMatch, "Failed password|^refused"),
        (Dialect::OsRegex, "^Accepted"),
        (Dialect::OsRegex, "authentication failure; $"),
        (Dialect::Pcre2, r"^sshd$"),
        (Dialect::Pcre2, r"\[error\] |^x"),
    ] {
        assert!(Pattern::new(d, p).unwrap().is_literal(), "{p}");
    }
    assert!(!Pattern::new(Dialect::OsRegex, r"^\d").unwrap().is_literal());
    assert!(!Pattern::new(Dialect::Pcre2, r"^\d").unwrap().is_literal());
    let p = Pattern::new(Dialect::Pcre2, r"\[error\] ").unwrap();
    let f = p.find(b"[Sun x] [ERROR] boom").unwrap();
    assert_eq!((f.start, f.end), (8, 16));
    let p = Pattern::new(Dialect::OsMatch, "zz|^ab").unwrap();
    assert_eq!(p.find(b"abzz").map(|f| (f.start, f.end)), Some((0, 2)));
    // PCRE2 `$` also matches before a final newline.
    assert!(m(Dialect::Pcre2, "^sshd$", "sshd\n"));
    assert!(!m(Dialect::OsMatch, "^sshd$", "sshd\n"));
}

#[test]
fn pcre2_is_caseless_and_bytes() {
    assert!(m(
        Dialect::Pcre2,
        r"^Failed \S+ for (\S+)",
        "FAILED password for root"
    ));
    let p = Pattern::new(Dialect::Pcre2, r"^(\S+) port (\d+?): |^(\S+): ").unwrap();
    let f = p.find(b"1.2.3.4: x").unwrap();
    assert_eq!(f.captures, vec![None, None, Some(0..7)]);
    assert!(Pattern::new(Dialect::Pcre2, "").is_err());
    assert!(Pattern::new(Dialect::Pcre2, "(").is_err());
}

#[test]
fn first_byte_filter_and_lowercased_literals() {
    assert!(prefix_filter(&translate_os_regex(r"^\d+ x").unwrap()).is_some());
    assert!(m(Dialect::OsRegex, r"^\d+ x", "12 x"));
    assert!(!m(Dialect::OsRegex, r"^\d+ x", "a12 x"));
    assert!(!m(Dialect::OsRegex, r"^\d+ x", ""));
    assert!(m(Dialect::OsRegex, r"^A\d|^b", "B"));
    let p = prefix_filter(&translate_os_regex(r"^\w\w\w \d+ ").unwrap()).unwrap();
    assert_eq!(p.len(), 5);
    assert!(m(Dialect::OsRegex, r"^\w\w\w \d+ ", "Mar 10 x"));
    assert!(!m(Dialect::OsRegex, r"^\w\w\w \d+ ", "187.1.2.3 x"));
    assert!(!m(Dialect::OsRegex, r"^\w\w\w \d+ ", "Mar"));
    // Alternatives: position-wise union, up to the shortest.
    let p = prefix_filter(&translate_os_regex(r"^%PIX-|^\w\w\w \d\d").unwrap()).unwrap();
    assert_eq!(p.len(), 5);
    assert!(m(Dialect::OsRegex, r"^%PIX-|^\w\w\w \d\d", "%PIX-4"));
    assert!(m(Dialect::OsRegex, r"^%PIX-|^\w\w\w \d\d", "Jan 01"));
    assert!(!m(Dialect::OsRegex, r"^%PIX-|^\w\w\w \d\d", "%ASA-4"));
    // Not every alternative anchored, or a possibly empty start: no
    // filter, and the regex decides.
    assert!(prefix_filter(&translate_os_regex(r"^a\d|b").unwrap()).is_none());
    assert!(m(Dialect::OsRegex, r"^a\d|b", "xb"));
    assert!(prefix_filter(&translate_os_regex(r"^\d*x").unwrap()).is_none());
    assert!(m(Dialect::OsRegex, r"^\d*x", "x"));
    assert!(m(Dialect::OsRegex, r"^(\w+) (\d+)", "Ab 12"));
    assert!(!m(Dialect::OsRegex, r"^(\w+) (\d+)", " Ab 12"));
    // Literal alternatives: ASCII case folds, other bytes do not.
    assert!(m(Dialect::OsMatch, "\u{c4}bc|zz", "x\u{c4}BC"));
    assert!(!m(Dialect::OsMatch, "\u{c4}bc|zz", "x\u{e4}bc"));
    assert!(m(Dialect::OsMatch, "NIKTO", "ua: nikto/2"));
    let p = Pattern::new(Dialect::OsMatch, "b|ab|B").unwrap();
    assert_eq!(p.find(b"xAB").map(|f| (f.start, f.end)), Some((1, 3)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
    /// The first-positions filter and the PCRE2 twin against the
    /// `regex` crate alone, on random start-anchored OS_Regex patterns
    /// over a small alphabet (so that runs, lazy quantifiers and
    /// backtracking all happen).
    #[test]
    fn fast_paths_agree_with_the_regex_crate(
        toks in proptest::collection::vec(0usize..14, 1..9),
        groups in proptest::collection::vec(proptest::bool::ANY, 9),
        dollar in proptest::bool::ANY,
        hay in proptest::collection::vec(proptest::sample::select(b"ab1 \".-:".to_vec()), 0..24),
    ) {
        const T: [&str; 14] = [
            r"\S+", r"\d+", r"\w+", r"\s", r"\S*", "a", " ", "\"", ".", r"\.+",
            r"\p", r"\d*", r"\w", r"\.",
        ];
        let mut src = String::from("^");
        for (i, &t) in toks.iter().enumerate() {
            if groups[i] { src.push('('); src.push_str(T[t]); src.push(')'); } else { src.push_str(T[t]); }
        }
        if dollar { src.push('$'); }
        let p = Pattern::new(Dialect::OsRegex, &src).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let x = p.find_into(&hay, &mut a);
        let y = p.find_into_reference(&hay, &mut b);
        proptest::prop_assert_eq!(x, y, "{} on {:?}", src, String::from_utf8_lossy(&hay));
        if x.is_some() {
            proptest::prop_assert_eq!(&a, &b, "{} on {:?}", src, String::from_utf8_lossy(&hay));
        }
        proptest::prop_assert_eq!(p.find_span(&hay), y);
        proptest::prop_assert_eq!(p.is_match(&hay), y.is_some());
    }
}

#[test]
fn hostile_haystacks() {
    let pats = [
        Pattern::new(Dialect::OsMatch, "needle|^x|y$").unwrap(),
        Pattern::new(Dialect::OsRegex, r"(\w+)\s(\S+)$").unwrap(),
        Pattern::new(Dialect::Pcre2, r"(\w+)\s(\S+)$").unwrap(),
        Pattern::new(Dialect::OsRegex, r"\.+needle").unwrap(),
    ];
    let mut big = vec![b'a'; 1 << 20];
    big.extend_from_slice(b" \xff\xfe\0needle");
    for p in &pats {
        let _ = p.is_match(b"\xff\xfe\0\x80");
        let _ = p.find(b"\xff\xfe\0\x80");
        assert!(p.is_match(&big), "{}", p.source());
        let f = p.find(&big).unwrap();
        assert!(f.end <= big.len());
    }
    // NUL bytes are ordinary bytes.
    assert!(m(Dialect::OsRegex, r"a\.b", "a\0b"));
    let p = Pattern::new(Dialect::OsRegex, r"a\.b").unwrap();
    assert!(p.is_match(b"a\xffb"));
}
