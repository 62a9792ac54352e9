//! What a test needs from the host, made visible: a test that cannot run
//! here shows as `ignored` (with its reason) or fails; it never returns
//! early and reports `ok`.
//!
//! libtest decides `#[ignore]` at compile time, so whether the root-only
//! tests run is decided when they are built: a crate with such tests has a
//! `build.rs` that calls [`build::root_cfg`], which sets the `palisade_root`
//! cfg when the build runs as root, or when `PALISADE_REQUIRE_ROOT=1` says
//! the root tests must run (`scripts/test` sets it when it runs as root, so
//! CI fails rather than skips). A root-only test then reads:
//!
//! ```text
//! #[test]
//! #[cfg_attr(not(palisade_root), ignore = "needs root: network namespaces")]
//! fn route_null_blocks_an_ipv4_scanner() {
//!     palisade_test_needs::root();
//!     palisade_test_needs::tool("nft", "nftables"); // when it runs nft
//!     // ...
//! }
//! ```
//!
//! Built as another user, it is listed as ignored with its reason. Built to
//! run, [`root`] fails it when the process is not root after all (a binary
//! built by root run by another user, `PALISADE_REQUIRE_ROOT=1` without
//! root, or `--ignored`), and [`tool`] fails it when a program it drives is
//! missing.

//!
//! Tests of the store on PostgreSQL work the same way: a crate's `build.rs`
//! calls [`build::postgres_cfg`], which sets the `palisade_postgres` cfg
//! when `PALISADE_TEST_POSTGRES` (a server's URL, from
//! `scripts/pg-test-cluster`) or `PALISADE_REQUIRE_ROOT=1` is set; such a
//! test is `#[cfg_attr(not(palisade_postgres), ignore = "...")]` and takes
//! its own database from [`postgres_database`], which fails it when no
//! server was given.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable that makes the root-only tests mandatory.
pub const REQUIRE_ROOT: &str = "PALISADE_REQUIRE_ROOT";

/// Whether `PALISADE_REQUIRE_ROOT=1` is set.
pub fn root_required() -> bool {
    std::env::var(REQUIRE_ROOT).is_ok_and(|v| v == "1")
}

/// Fails the calling test unless the process runs as root.
///
/// # Panics
///
/// When the effective user is not root, with what to do about it.
#[track_caller]
pub fn root() {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return;
    }
    if root_required() {
        panic!(
            "this test needs root, and {REQUIRE_ROOT}=1 says the root tests must run, \
             but it runs as uid {uid}: run it as root"
        );
    }
    panic!(
        "this test needs root but runs as uid {uid}: it was built by root (or asked for \
         with --ignored); run it as root, or build the tests as this user, where it is ignored"
    );
}

/// Fails the calling test unless `program` runs (`program --version`);
/// `package` names the Debian package that provides it.
///
/// # Panics
///
/// When the program is missing or does not run.
#[track_caller]
pub fn tool(program: &str, package: &str) {
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{program} --version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "this test needs {program}, which does not run ({e}): install {package} \
             (scripts/install-test-deps does)"
        ),
    }
}

/// The environment variable with the URL of a PostgreSQL server the tests
/// may create databases on (`scripts/test` starts one).
pub const POSTGRES_URL: &str = "PALISADE_TEST_POSTGRES";

/// A database of its own for one test, on the server of
/// [`POSTGRES_URL`]; dropped (with its connections) when this is.
#[derive(Debug)]
pub struct PostgresDatabase {
    /// Its URL.
    pub url: String,
    server: String,
    name: String,
}

/// Creates a new, empty database for the calling test (with `psql`, so
/// tests can run in parallel, each on its own).
///
/// # Panics
///
/// When no server is given or it refuses, with what to do about it.
#[track_caller]
pub fn postgres_database() -> PostgresDatabase {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Ok(server) = std::env::var(POSTGRES_URL) else {
        panic!(
            "this test needs a PostgreSQL server: set {POSTGRES_URL} to its URL \
             (scripts/pg-test-cluster start makes one; scripts/test does)"
        );
    };
    let name = format!(
        "palisade_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(&server, &format!("CREATE DATABASE {name}"));
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    PostgresDatabase {
        url: format!("{base}/{name}"),
        server,
        name,
    }
}

impl PostgresDatabase {
    /// Its URL through the server's Unix socket, for a process in another
    /// network namespace (whose loopback is not the server's).
    ///
    /// # Panics
    ///
    /// When the server does not say where its socket is.
    #[track_caller]
    pub fn socket_url(&self) -> String {
        let dir = psql_value(&self.server, "SHOW unix_socket_directories");
        let dir = dir.split(',').next().unwrap_or_default().trim();
        assert!(
            dir.starts_with('/'),
            "the server has no socket directory: {dir:?}"
        );
        let port = psql_value(&self.server, "SHOW port");
        format!(
            "postgres://postgres@localhost/{}?host={dir}&port={port}",
            self.name
        )
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.server,
                "-c",
                &sql,
            ])
            .output();
    }
}

#[track_caller]
fn psql_value(server: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-d", server, "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql does not run: {e}"));
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[track_caller]
fn psql(server: &str, sql: &str) {
    match Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server, "-c", sql])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "psql {sql:?} on {POSTGRES_URL} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "this test needs psql, which does not run ({e}): install postgresql-client \
             (scripts/install-test-deps installs postgresql)"
        ),
    }
}

/// For the `build.rs` of a crate with root-only tests.
pub mod build {
    use super::REQUIRE_ROOT;

    /// The cfg that lets the root-only tests run.
    pub const ROOT_CFG: &str = "palisade_root";

    /// The cfg that lets the PostgreSQL tests run.
    pub const POSTGRES_CFG: &str = "palisade_postgres";

    /// Declares the `palisade_postgres` cfg and sets it when
    /// `PALISADE_TEST_POSTGRES` or `PALISADE_REQUIRE_ROOT=1` is set (then
    /// a missing server fails those tests rather than skips them).
    pub fn postgres_cfg() {
        println!("cargo::rustc-check-cfg=cfg({POSTGRES_CFG})");
        println!("cargo::rerun-if-env-changed={}", super::POSTGRES_URL);
        println!("cargo::rerun-if-env-changed={REQUIRE_ROOT}");
        if std::env::var_os(super::POSTGRES_URL).is_some() || super::root_required() {
            println!("cargo::rustc-cfg={POSTGRES_CFG}");
        }
    }

    /// Declares the `palisade_root` cfg and sets it when the build runs
    /// as root or `PALISADE_REQUIRE_ROOT=1`.
    ///
    /// When not root, cargo runs the build script again (and rebuilds the
    /// crate) when `PALISADE_REQUIRE_ROOT` changes, so a build by another
    /// user followed by `sudo scripts/test` compiles the root tests in. As
    /// root the variable changes nothing and is not watched: `cargo test`
    /// and `scripts/test` share one build.
    pub fn root_cfg() {
        println!("cargo::rustc-check-cfg=cfg({ROOT_CFG})");
        println!("cargo::rerun-if-changed=build.rs");
        if nix::unistd::geteuid().is_root() {
            println!("cargo::rustc-cfg={ROOT_CFG}");
            return;
        }
        println!("cargo::rerun-if-env-changed={REQUIRE_ROOT}");
        if super::root_required() {
            println!("cargo::rustc-cfg={ROOT_CFG}");
        }
    }
}
