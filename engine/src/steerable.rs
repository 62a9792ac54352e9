//! OSSEC decoders known to be steerable: they take an address, a port, a
//! user or a status from text the client writes, so a crafted user name,
//! path or request picks the address an active response blocks (or hides
//! a scan). Palisade keeps OSSEC's decoders as they are when a manager
//! judges with an OSSEC `etc` directory (compatibility), and warns once
//! about each of these at start-up and in `check-config`, naming the
//! Palisade decoder that reads the same lines safely (`docs/rules.md`,
//! "Decoders the attacker cannot steer"; `docs/migrating-from-ossec.md`).
//!
//! This list is the one place that knows them. An entry is keyed by the
//! decoder's name and the [`fingerprint`] of its patterns as OSSEC 3.8.0
//! and 3.3.0 ship them, so a copy the user has fixed (another pattern)
//! is not flagged, and neither is Palisade's own decoder of the same name.

use std::fmt;

use crate::decoder::{Decoder, DecoderSet};

/// One decoder known to be steerable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steerable {
    /// The decoder's name (`<decoder name>`).
    pub decoder: &'static str,
    /// [`fingerprint`]s of the shipped versions (3.8.0, 3.3.0; one when
    /// both ship the same patterns).
    pub fingerprints: &'static [u64],
    /// The fields the client can choose.
    pub fields: &'static str,
    /// How.
    pub how: &'static str,
    /// The Palisade decoder that reads these lines from positions the
    /// client cannot write.
    pub safer: &'static str,
}

/// The steerable decoders of OSSEC's stock `decoder.xml`.
pub const KNOWN: &[Steerable] = &[
    Steerable {
        decoder: "ssh-invalid-user",
        fingerprints: &[0xd498_5f94_7b68_fc39],
        fields: "srcip",
        how: "takes the first ` from ADDR` of the line, and sshd logs the user name \
              before it verbatim: `Invalid user x from 192.0.2.1 from REAL port N`",
        safer: "sshd-invalid",
    },
    Steerable {
        decoder: "ssh-kbd",
        fingerprints: &[0x149f_269d_733e_8fbe],
        fields: "user, srcip, srcport",
        how: "takes the first ` user X from ADDR port N ` of the line, which a user \
              name can hold",
        safer: "sshd-auth",
    },
    Steerable {
        decoder: "ssh-pam-error",
        fingerprints: &[0xf1d9_8085_9e5d_eea2],
        fields: "user, srcip",
        how: "takes the first `user X from ADDR` of the line, which a user name can hold",
        safer: "sshd-pam-error",
    },
    Steerable {
        decoder: "ssh-disconnected",
        fingerprints: &[0x42f8_8dd0_16df_7279],
        fields: "srcip",
        how: "takes the second word after `Disconnected from invalid user`, so a user \
              name with a space (`x 192.0.2.1`) names the address",
        safer: "sshd-conn-user",
    },
    Steerable {
        decoder: "ssh-connection",
        fingerprints: &[0x98e5_437f_45d6_7f65],
        fields: "user, srcip",
        how: "takes the two words after `Connection closed by ... user`, so a user name \
              with a space (`x 192.0.2.1`) names the address",
        safer: "sshd-conn-user",
    },
    Steerable {
        decoder: "sshd-exceed",
        fingerprints: &[0xfb24_9a30_06f8_3b82],
        fields: "user, srcip, srcport",
        how: "takes the first `X from ADDR port N ` after `exceeded for`, which a user \
              name can hold",
        safer: "sshd-max-attempts",
    },
    Steerable {
        decoder: "pam-host",
        fingerprints: &[0x50df_55d9_2bd4_590b],
        fields: "srcip",
        how: "takes the first ` rhost=` of the line, and a service that logs the \
              client's user name in `ruser=` (dovecot) lets it hold one",
        safer: "pam-failure",
    },
    Steerable {
        decoder: "pam-ruser",
        fingerprints: &[0x8b9a_9bbb_ed48_5e6b],
        fields: "srcip",
        how: "takes the first ` rhost=` of the line (its second block), which the \
              client's user name in `ruser=` can hold",
        safer: "pam-failure",
    },
    Steerable {
        decoder: "pam-host-user",
        fingerprints: &[0x038e_070a_a1f5_489a, 0x1e8c_f70c_2848_0a2f],
        fields: "srcip, user",
        how: "takes the first `rhost=ADDR user=X` of the line, which the client's user \
              name in `ruser=` can hold",
        safer: "pam-failure",
    },
    Steerable {
        decoder: "nginx-errorlog-ip",
        fingerprints: &[0x1b6a_2b76_287c_c714],
        fields: "srcip",
        how: "takes the first `, client: ADDR, ` of the line, and nginx quotes the \
              requested path (and user names, referrers) before it",
        safer: "nginx-errorlog-client",
    },
    Steerable {
        decoder: "apache-errorlog-ip",
        fingerprints: &[0x4885_0fe4_ad01_194c, 0x10fe_68c6_3744_17ef],
        fields: "srcip, srcport",
        how: "takes the first `[client ADDR]` of the line, so a message without a client \
              field of its own that quotes a path or a header holding one names the address",
        safer: "apache-errorlog-client",
    },
    Steerable {
        decoder: "apache24-errorlog-ip-port",
        fingerprints: &[0x6e15_4f13_1005_969a, 0x1221_d863_654e_4818],
        fields: "srcip, srcport",
        how: "takes the first `[client ADDR:PORT] X: ` of the line, so a message without \
              a client field of its own that quotes one names the address",
        safer: "apache-errorlog-client",
    },
    Steerable {
        decoder: "apache24-errorlog-ip",
        fingerprints: &[0xedb1_bbf6_43ba_4b89, 0x6e60_58a7_e3ee_813f],
        fields: "srcip",
        how: "takes the first `[client ADDR] X: ` of the line, so a message without a \
              client field of its own that quotes one names the address",
        safer: "apache-errorlog-client",
    },
    Steerable {
        decoder: "web-accesslog",
        fingerprints: &[0x56a1_aaed_9076_c57f, 0xd756_05a3_6718_cf63],
        fields: "action, url, id (the status)",
        how: "takes the first `\"METHOD URL HTTP/x\" STATUS ` of the line, and Apache \
              writes the client's quotes inside the request as `\\\"`: a request holding \
              `\\\"GET / HTTP/1.1\\\" 200 ` turns a 404 into a 200 and hides a scan",
        safer: "web-accesslog (Palisade's)",
    },
];

/// FNV-1a (64 bits) of a decoder's prematch and regex sources: stable
/// across builds and Rust versions, unlike `std`'s hasher.
pub fn fingerprint(d: &Decoder) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let prematch = d.prematch.as_ref().map_or("", |p| p.source());
    let regex = d.regex.as_ref().map_or("", |p| p.source());
    for b in prematch.bytes().chain([0]).chain(regex.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A loaded decoder found in [`KNOWN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is known about it.
    pub known: &'static Steerable,
    /// Where it was loaded from.
    pub file: String,
    /// The line of its `<decoder>` element.
    pub line: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.known;
        write!(
            f,
            "{}:{}: decoder `{}` can be steered by the client ({}): it {}. Palisade's \
             `{}` reads these lines from positions the client cannot write; see \
             docs/migrating-from-ossec.md",
            self.file, self.line, k.decoder, k.fields, k.how, k.safer
        )
    }
}

/// The steerable decoders among `set`'s, each once (the first block of a
/// name that OSSEC splits into several).
pub fn find(set: &DecoderSet) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    for d in set.decoders() {
        let Some(known) = KNOWN.iter().find(|k| k.decoder == d.own_name) else {
            continue;
        };
        if found.iter().any(|f| f.known.decoder == known.decoder) {
            continue;
        }
        if known.fingerprints.contains(&fingerprint(d)) {
            found.push(Finding {
                known,
                file: d.file.clone(),
                line: d.line,
            });
        }
    }
    found
}
