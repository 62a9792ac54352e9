//! Snapshots (insta, YAML) of what OSSEC 3.8.0's `decoder.xml` extracts from
//! realistic lines written for Palisade: Apache and nginx access and error
//! logs, sshd, PAM, sudo, su and generic syslog. Each line is pre-decoded
//! (location `/var/log/test`, manager host `mgr`) and decoded; the snapshot
//! shows the reported decoder, the child's own name, the category and every
//! field. The `.snap` files were reviewed by hand against the decoders.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use palisade_engine::decoder::DecoderSet;
use palisade_engine::event::FieldName;
use palisade_engine::predecode::predecode;
use serde::Serialize;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/ossec");

fn set() -> &'static DecoderSet {
    static SET: OnceLock<DecoderSet> = OnceLock::new();
    SET.get_or_init(|| {
        let p = Path::new(CORPUS).join("etc/decoder.xml");
        DecoderSet::load_files(&[p]).unwrap_or_else(|e| panic!("{e}"))
    })
}

#[derive(Serialize)]
struct Decoded {
    line: String,
    decoder: Option<String>,
    own_name: Option<String>,
    category: &'static str,
    hostname: Option<String>,
    program_name: Option<String>,
    fields: BTreeMap<String, String>,
}

fn decode(line: &str) -> Decoded {
    let mut ev = predecode(line.as_bytes(), "/var/log/test", "mgr");
    set().decode(&mut ev);
    let mut fields = BTreeMap::new();
    for name in [
        "srcip",
        "dstip",
        "srcport",
        "dstport",
        "protocol",
        "action",
        "srcuser",
        "dstuser",
        "id",
        "url",
        "data",
        "status",
        "system_name",
        "filename",
    ] {
        if let Some(v) = ev.fields.get(&FieldName::parse(name)) {
            fields.insert(name.to_string(), v.to_string());
        }
    }
    for (k, v) in &ev.fields.dynamic {
        fields.insert(k.clone(), v.clone());
    }
    Decoded {
        line: line.to_string(),
        decoder: ev.decoder_name,
        own_name: ev.decoder_own_name,
        category: ev.category.as_str(),
        hostname: ev.hostname,
        program_name: ev.program_name,
        fields,
    }
}

fn snap(name: &str, lines: &[&str]) {
    let decoded: Vec<Decoded> = lines.iter().map(|l| decode(l)).collect();
    insta::assert_yaml_snapshot!(name, decoded);
}

#[test]
fn apache_access() {
    snap(
        "apache_access",
        &[
            r#"203.0.113.7 - - [14/Nov/2023:22:13:19 +0000] "GET /index.html HTTP/1.1" 200 5120 "-" "Mozilla/5.0 (X11; Linux x86_64)""#,
            r#"198.51.100.23 - alice [14/Nov/2023:22:14:02 +0100] "POST /wp-login.php HTTP/1.1" 302 0 "https://example.org/wp-login.php" "Mozilla/5.0""#,
            r#"192.0.2.44 - - [14/Nov/2023:22:15:40 -0500] "GET /cgi-bin/test.cgi?x=1%27%20OR%201=1 HTTP/1.0" 404 209 "-" "sqlmap/1.7""#,
            r#"2001:db8::15 - - [14/Nov/2023:22:16:01 +0000] "HEAD /robots.txt HTTP/1.1" 200 - "-" "curl/8.4.0""#,
            r#"10.1.2.3 - bob [14/Nov/2023:22:17:55 +0000] "DELETE /api/v1/items/42 HTTP/2.0" 403 97 "-" "python-requests/2.31""#,
            r#"203.0.113.9 - - [14/Nov/2023:22:18:30 +0000] "GET /../../etc/passwd HTTP/1.1" 400 226 "-" "-""#,
            r#"198.51.100.2 - - [14/Nov/2023:22:19:11 +0000] "-" 408 0 "-" "-""#,
            r#"192.0.2.10 - - [14/Nov/2023:22:20:00 +0000] "GET /phpmyadmin/index.php HTTP/1.1" 404 196 "-" "Mozilla/5.0 zgrab/0.x""#,
        ],
    );
}

#[test]
fn nginx_access_and_error() {
    snap(
        "nginx",
        &[
            r#"172.16.5.4 - - [15/Nov/2023:08:01:12 +0000] "GET /static/app.js HTTP/1.1" 304 0 "https://shop.example.com/" "Mozilla/5.0 (Macintosh)""#,
            r#"172.16.5.9 - - [15/Nov/2023:08:01:13 +0000] "GET /.env HTTP/1.1" 404 153 "-" "Go-http-client/1.1""#,
            r#"203.0.113.50 - - [15/Nov/2023:08:02:00 +0000] "POST /xmlrpc.php HTTP/1.1" 499 0 "-" "Mozilla/4.0""#,
            r#"198.51.100.77 - - [15/Nov/2023:08:03:44 +0000] "GET /search?q=%3Cscript%3E HTTP/1.1" 200 3021 "-" "Mozilla/5.0""#,
            r#"2023/11/15 08:05:01 [error] 1234#1234: *5678 open() "/usr/share/nginx/html/wp-admin/setup-config.php" failed (2: No such file or directory), client: 203.0.113.61, server: shop.example.com, request: "GET /wp-admin/setup-config.php HTTP/1.1", host: "shop.example.com""#,
            r#"2023/11/15 08:06:10 [crit] 1234#1234: *5690 SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL handshaking, client: 198.51.100.3, server: 0.0.0.0:443"#,
            r#"2023/11/15 08:07:22 [warn] 1234#1234: *5701 an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/1/00/0000000001 while reading upstream, client: 10.0.0.8, server: api.example.com"#,
        ],
    );
}

#[test]
fn apache_error() {
    snap(
        "apache_error",
        &[
            r#"[Wed Nov 15 09:12:33.123456 2023] [core:error] [pid 4242:tid 140000000000000] [client 203.0.113.88:51234] AH00126: Invalid URI in request GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1"#,
            r#"[Wed Nov 15 09:13:01.000001 2023] [authz_core:error] [pid 4243] [client 198.51.100.14:40000] AH01630: client denied by server configuration: /var/www/private"#,
            r#"[Wed Nov 15 09:14:45 2023] [error] [client 192.0.2.200] File does not exist: /var/www/html/favicon.ico"#,
            r#"[Wed Nov 15 09:15:02 2023] [error] [client 192.0.2.201] user admin: authentication failure for "/admin": Password Mismatch"#,
            r#"[Wed Nov 15 09:16:30.555555 2023] [auth_basic:error] [pid 4250] [client 203.0.113.5:60001] AH01617: user carol: authentication failure for "/secure": Password Mismatch"#,
            r#"[Wed Nov 15 09:17:00.000000 2023] [mpm_event:notice] [pid 1:tid 1] AH00489: Apache/2.4.57 (Debian) configured -- resuming normal operations"#,
        ],
    );
}

#[test]
fn sshd() {
    snap(
        "sshd",
        &[
            "Nov 14 22:13:19 web01 sshd[2231]: Accepted publickey for deploy from 10.20.30.40 port 52122 ssh2: ED25519 SHA256:q3Nc8yQzT0pW",
            "Nov 14 22:13:20 web01 sshd[2232]: Failed password for root from 203.0.113.99 port 40022 ssh2",
            "Nov 14 22:13:21 web01 sshd[2233]: Failed password for invalid user oracle from 203.0.113.99 port 40030 ssh2",
            "Nov 14 22:13:22 web01 sshd[2234]: Invalid user test from 198.51.100.200 port 55555",
            "Nov 14 22:13:23 web01 sshd[2235]: Connection closed by authenticating user root 203.0.113.99 port 40040 [preauth]",
            "Nov 14 22:13:24 web01 sshd[2236]: Received disconnect from 198.51.100.200 port 55555:11: Bye Bye [preauth]",
            "Nov 14 22:13:25 web01 sshd[2237]: Did not receive identification string from 192.0.2.1 port 1234",
            "Nov 14 22:13:26 web01 sshd[2238]: error: maximum authentication attempts exceeded for root from 203.0.113.99 port 40050 ssh2 [preauth]",
            "Nov 14 22:13:27 web01 sshd[2239]: pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)",
            "Nov 14 22:13:28 web01 sshd[2240]: Accepted password for alice from 2001:db8::7 port 60222 ssh2",
            "2023-11-15T11:00:25.123456+00:00 web01 sshd[2400]: Failed password for root from 203.0.113.100 port 41000 ssh2",
        ],
    );
}

#[test]
fn pam_sudo_su() {
    snap(
        "pam_sudo_su",
        &[
            "Nov 14 23:01:02 web01 login[901]: pam_unix(login:auth): authentication failure; logname=LOGIN uid=0 euid=0 tty=tty1 ruser= rhost=  user=root",
            "Nov 14 23:01:05 web01 sshd[2300]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.99  user=root",
            "Nov 14 23:02:00 web01 CRON[3001]: pam_unix(cron:session): session opened for user root by (uid=0)",
            "Nov 14 23:02:01 web01 CRON[3001]: pam_unix(cron:session): session closed for user root",
            "Nov 15 10:00:01 web01 sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
            "Nov 15 10:00:05 web01 sudo:    alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash",
            "Nov 15 10:00:09 web01 sudo:      bob : user NOT in sudoers ; TTY=pts/2 ; PWD=/tmp ; USER=root ; COMMAND=/usr/bin/id",
            "Nov 15 10:00:10 web01 sudo: pam_unix(sudo:session): session opened for user root(uid=0) by deploy(uid=1001)",
            "Nov 15 10:05:00 web01 su[4100]: pam_unix(su:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/1 ruser=alice rhost=  user=root",
            "Nov 15 10:05:10 web01 su[4101]: (to root) alice on pts/1",
            "Nov 15 10:05:20 web01 su[4102]: FAILED SU (to root) bob on pts/2",
            "Nov 15 10:05:30 web01 su: BAD SU carol to root on /dev/ttyp1",
        ],
    );
}

#[test]
fn generic_syslog() {
    snap(
        "syslog",
        &[
            "Nov 14 23:03:00 web01 systemd-logind[500]: New session 12 of user deploy.",
            "Nov 15 11:00:00 web01 kernel: [12345.678901] Out of memory: Killed process 4321 (java) total-vm:8000000kB",
            "Nov 15 11:00:05 web01 systemd[1]: Started Daily apt download activities.",
            "Nov 15 11:00:10 web01 kernel: [12350.000001] IN=eth0 OUT= MAC=00:11:22:33:44:55:66:77:88:99:aa:bb:08:00 SRC=203.0.113.66 DST=10.0.0.5 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=54321 DF PROTO=TCP SPT=44444 DPT=23 WINDOW=29200 RES=0x00 SYN URGP=0",
            "Nov 15 11:00:15 web01 postfix/smtpd[5100]: NOQUEUE: reject: RCPT from unknown[198.51.100.9]: 554 5.7.1 <spam@example.net>: Relay access denied; from=<a@b.example> to=<spam@example.net> proto=ESMTP helo=<x>",
            "Nov 15 11:00:20 web01 named[700]: client 192.0.2.55#53122 (example.com): query (cache) 'example.com/ANY/IN' denied",
        ],
    );
}
