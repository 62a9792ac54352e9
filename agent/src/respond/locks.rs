//! One lock per (response, address), so an add, a delete, the expiry timer
//! and start-up reconciliation never act on the same block at once, while
//! different blocks proceed in parallel (a slow script does not hold up a
//! null route).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type LockMap = HashMap<(String, IpAddr), Arc<tokio::sync::Mutex<()>>>;

/// The per-block locks; entries nobody holds are dropped as others are taken.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<LockMap>,
}

impl KeyedLocks {
    /// Waits for and takes the lock of `response` on `ip`.
    pub async fn lock(&self, response: &str, ip: IpAddr) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, v| Arc::strong_count(v) > 1);
            map.entry((response.to_owned(), ip)).or_default().clone()
        };
        m.lock_owned().await
    }
}
