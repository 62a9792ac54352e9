//! Palisade's own decoders cannot be steered: whatever a client writes in
//! the parts of a line it controls (an ssh user name, a banner, a
//! disconnect reason, an HTTP user name, URL, referer or user agent), the
//! decoded source address is the one the server wrote, or none; never one
//! the client wrote. The input is cut at 0xFF into up to four client-written
//! strings and placed into real message formats; the assertions are the
//! rule of docs/rules.md, "Decoders the attacker cannot steer".
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_engine::decoder::DecoderSet;
use palisade_engine::default_ruleset;
use palisade_engine::engine::Ruleset;
use palisade_engine::event::Event;
use palisade_engine::predecode::predecode;

const REAL: &str = "203.0.113.9";
const PORT: &str = "4242";

fn decoders() -> &'static DecoderSet {
    static R: OnceLock<Ruleset> = OnceLock::new();
    &R.get_or_init(|| match default_ruleset::load() {
        Ok(r) => r,
        Err(e) => panic!("Palisade's default ruleset does not load:\n{e}"),
    })
    .decoders
}

fn decode(line: &[u8]) -> Event {
    let mut ev = predecode(line, "/var/log/x", "fuzz");
    decoders().decode(&mut ev);
    ev
}

/// What sshd's log does to a user name: one line, so no newline.
fn one_line(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'\n').collect()
}

/// nginx's default access-log escaping of a variable: `"`, `\`, control
/// and non-ASCII bytes as `\xHH`; an empty user is `-`.
fn nginx_escape(b: &[u8], empty: &[u8]) -> Vec<u8> {
    if b.is_empty() {
        return empty.to_vec();
    }
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            out.extend_from_slice(format!("\\x{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

/// Apache's `ap_escape_logitem`: `"` and `\` behind a backslash, control
/// and non-ASCII bytes as `\xhh`; an empty user is `""`.
fn apache_escape(b: &[u8], empty: &[u8]) -> Vec<u8> {
    if b.is_empty() {
        return empty.to_vec();
    }
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        match c {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(c);
            }
            c if !(0x20..0x7f).contains(&c) => {
                out.extend_from_slice(format!("\\x{c:02x}").as_bytes())
            }
            c => out.push(c),
        }
    }
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn srcip(ev: &Event) -> Option<&str> {
    ev.fields.srcip.as_deref()
}

fuzz_target!(|data: &[u8]| {
    let mut it = data.split(|&b| b == 0xff);
    let u = one_line(it.next().unwrap_or_default());
    let v = one_line(it.next().unwrap_or_default());
    let w = one_line(it.next().unwrap_or_default());
    let x = one_line(it.next().unwrap_or_default());
    let (r, p) = (REAL.as_bytes(), PORT.as_bytes());
    let h: &[u8] = b"Nov 14 22:13:20 web01 sshd[2232]: ";

    // sshd: the user name comes before the address; the end fixes it.
    for line in [
        cat(&[
            h,
            b"Failed password for invalid user ",
            &u,
            b" from ",
            r,
            b" port ",
            p,
            b" ssh2",
        ]),
        cat(&[
            h,
            b"Failed password for ",
            &u,
            b" from ",
            r,
            b" port ",
            p,
            b" ssh2",
        ]),
        cat(&[
            h,
            b"Failed publickey for invalid user ",
            &u,
            b" from ",
            r,
            b" port ",
            p,
            b" ssh2: RSA SHA256:q3Nc8y",
        ]),
        cat(&[
            h,
            b"Postponed keyboard-interactive for invalid user ",
            &u,
            b" from ",
            r,
            b" port ",
            p,
            b" ssh2 [preauth]",
        ]),
        cat(&[
            h,
            b"error: maximum authentication attempts exceeded for invalid user ",
            &u,
            b" from ",
            r,
            b" port ",
            p,
            b" ssh2 [preauth]",
        ]),
        cat(&[h, b"Invalid user ", &u, b" from ", r, b" port ", p]),
        cat(&[
            h,
            b"Connection closed by invalid user ",
            &u,
            b" ",
            r,
            b" port ",
            p,
            b" [preauth]",
        ]),
        cat(&[
            h,
            b"Disconnected from authenticating user ",
            &u,
            b" ",
            r,
            b" port ",
            p,
            b" [preauth]",
        ]),
        cat(&[
            h,
            b"Bad protocol version identification '",
            &u,
            b"' from ",
            r,
            b" port ",
            p,
        ]),
        cat(&[
            h,
            b"Received disconnect from ",
            r,
            b" port ",
            p,
            b":11: ",
            &u,
            b" [preauth]",
        ]),
        cat(&[
            h,
            b"fatal: Unable to negotiate with ",
            r,
            b" port ",
            p,
            b": no matching key exchange method found. Their offer: ",
            &u,
            b" [preauth]",
        ]),
    ] {
        let ev = decode(&line);
        assert_eq!(
            ev.decoder_name.as_deref(),
            Some("sshd"),
            "{}",
            String::from_utf8_lossy(&line)
        );
        assert_eq!(srcip(&ev), Some(REAL), "{}", String::from_utf8_lossy(&line));
        assert_eq!(
            ev.fields.srcport.as_deref(),
            Some(PORT),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }

    // A certificate's key id after the address, a user name before it:
    // the real address or none.
    let line = cat(&[
        h,
        b"Failed publickey for invalid user ",
        &u,
        b" from ",
        r,
        b" port ",
        p,
        b" ssh2: ED25519-CERT SHA256:a ID ",
        &v,
        b" (serial 1) CA ED25519 SHA256:b",
    ]);
    let ev = decode(&line);
    assert!(
        matches!(srcip(&ev), None | Some(REAL)),
        "{}",
        String::from_utf8_lossy(&line)
    );

    // PAM: rhost at its fixed place, the user name last.
    let line = cat(&[
        h,
        b"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=",
        r,
        b"  user=",
        &u,
    ]);
    let ev = decode(&line);
    assert_eq!(srcip(&ev), Some(REAL), "{}", String::from_utf8_lossy(&line));
    // A service that puts the client's name in ruser too: the real address or none.
    let line = cat(&[
        h,
        b"pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=",
        &u,
        b" rhost=",
        r,
        b"  user=",
        &u,
    ]);
    let ev = decode(&line);
    assert!(
        matches!(srcip(&ev), None | Some(REAL)),
        "{}",
        String::from_utf8_lossy(&line)
    );

    // Access logs, escaped as nginx and as Apache escape them: the first
    // field is the address and the status is the server's.
    for (user, url, referer, agent) in [
        (
            nginx_escape(&u, b"-"),
            nginx_escape(&v, b""),
            nginx_escape(&w, b"-"),
            nginx_escape(&x, b"-"),
        ),
        (
            apache_escape(&u, b"\"\""),
            apache_escape(&v, b""),
            apache_escape(&w, b"-"),
            apache_escape(&x, b"-"),
        ),
    ] {
        let line = cat(&[
            r,
            b" - ",
            &user,
            b" [10/Mar/2024:13:55:36 +0000] \"GET /",
            &url,
            b" HTTP/1.1\" 404 153 \"",
            &referer,
            b"\" \"",
            &agent,
            b"\"",
        ]);
        let ev = decode(&line);
        let text = String::from_utf8_lossy(&line);
        assert_eq!(ev.decoder_name.as_deref(), Some("web-accesslog"), "{text}");
        assert_eq!(srcip(&ev), Some(REAL), "{text}");
        assert_eq!(ev.fields.id.as_deref(), Some("404"), "{text}");
    }

    // nginx error log: client text before and after the client field (not
    // escaped there): the real address or none.
    let line = cat(&[
        b"2024/03/10 13:55:36 [error] 12#12: *3 user \"",
        &u,
        b"\": password mismatch, client: ",
        r,
        b", server: example.com, request: \"GET /",
        &v,
        b" HTTP/1.1\", host: \"example.com\", referrer: \"",
        &w,
        b"\"",
    ]);
    let ev = decode(&line);
    assert_eq!(ev.decoder_name.as_deref(), Some("nginx-errorlog"));
    assert!(
        matches!(srcip(&ev), None | Some(REAL)),
        "{}",
        String::from_utf8_lossy(&line)
    );

    // Apache error log: the client field at its fixed place.
    let line = cat(&[
        b"[Wed Nov 15 09:16:30.555555 2023] [auth_basic:error] [pid 4250] [client ",
        r,
        b":",
        p,
        b"] AH01617: user ",
        &u,
        b": authentication failure for \"/",
        &v,
        b"\": Password Mismatch, referer: ",
        &w,
    ]);
    let ev = decode(&line);
    assert_eq!(ev.decoder_name.as_deref(), Some("apache-errorlog"));
    assert_eq!(srcip(&ev), Some(REAL), "{}", String::from_utf8_lossy(&line));
    assert_eq!(ev.fields.srcport.as_deref(), Some(PORT));
});
