//! `palisade-quickstart`, the README's first command: a newcomer's first
//! ten minutes. A manager and an agent run in this process on loopback (the
//! daemons' public `run`, as the end-to-end tests call them), a scanner's
//! burst of 404s is replayed into a web access log, and the alert, the
//! active response, the null route and its lifting are shown as they
//! happen. The binary is `src/main.rs` and `src/demo.rs`; this library
//! holds only the scan, which the end-to-end tests replay too.
//!
//! It is a crate of its own because it needs both daemons: the manager
//! and the agent do not depend on each other.
#![forbid(unsafe_code)]

/// The paths a ZmEu scan asks for, as OSSEC reported one, and three more:
/// fourteen 404s, enough for rule 31151.
pub const SCAN: [&str; 14] = [
    "/phpadmin/scripts/setup.php",
    "/typo3/phpmyadmin/scripts/setup.php",
    "/mysqladmin/scripts/setup.php",
    "/mysql/scripts/setup.php",
    "/myadmin/scripts/setup.php",
    "/dbadmin/scripts/setup.php",
    "/db/scripts/setup.php",
    "/admin/phpmyadmin/scripts/setup.php",
    "/admin/pma/scripts/setup.php",
    "/admin/scripts/setup.php",
    "/scripts/setup.php",
    "/pma/scripts/setup.php",
    "/phpMyAdmin/scripts/setup.php",
    "/sqladmin/scripts/setup.php",
];
