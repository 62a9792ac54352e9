//! The manager's unblocks, remembered for a while, so that a block the
//! manager decided before an unblock but that arrives after it is not
//! carried out.
//!
//! Why: the manager records every command with an increasing id, but an
//! add and the delete that lifts it can be carried out in the wrong
//! order: two of the manager's tasks (or, with several managers, a
//! wake-up and an operator's request) can put them into the stream out
//! of order, and the agent runs commands concurrently (a slow script
//! must not hold up a null route), an add reading the host's addresses
//! before it takes the block's lock. Carried out in that order, the add
//! would block again what the operator lifted, until its timeout: a
//! lock-out. The manager cancels adds that were still waiting when the
//! unblock was recorded; this covers the ones already on their way. The
//! converse, a delete (or an add) older than the block in force, is
//! judged from the ledger's command id ([`newer_in_force`]).
//!
//! An add whose id is lower than that of a delete of the same response
//! and address received in the last [`REMEMBERED_FOR`] is refused. Ids
//! that are not numbers (never the manager's) are not compared. The
//! memory is bounded ([`MAX_REMEMBERED`]) and not kept across restarts:
//! a stale add is in flight for seconds, and its stream ends with the
//! agent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How long a delete is remembered: far longer than a command waits in a
/// manager (10 s for a full stream, 1 s for a hand-over), short enough
/// that a manager whose database was rebuilt (ids from 1 again) is not
/// refused for long.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(600);

/// At most this many (response, address) pairs; the oldest is forgotten
/// first.
pub const MAX_REMEMBERED: usize = 65_536;

/// The latest delete per (response, address): its command id and when it
/// came (ms).
#[derive(Debug, Default)]
pub struct Lifted {
    map: Mutex<HashMap<(String, IpAddr), (i64, i64)>>,
}

impl Lifted {
    /// Remembers a delete of `response` on `ip` with `command_id`,
    /// received at `now_ms`.
    pub fn record(&self, response: &str, ip: IpAddr, command_id: &str, now_ms: i64) {
        let Ok(id) = command_id.parse::<i64>() else {
            return;
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED {
            let since = now_ms.saturating_sub(REMEMBERED_FOR.as_millis() as i64);
            map.retain(|_, (_, at)| *at >= since);
            if map.len() >= MAX_REMEMBERED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry((response.to_owned(), ip)).or_insert((id, now_ms));
        *entry = (entry.0.max(id), now_ms);
    }

    /// The id of a delete of `response` on `ip`, remembered at `now_ms`,
    /// that is newer than the add `command_id`: the add was decided before
    /// that unblock and must not be carried out.
    pub fn lifted_after(
        &self,
        response: &str,
        ip: IpAddr,
        command_id: &str,
        now_ms: i64,
    ) -> Option<i64> {
        let add = command_id.parse::<i64>().ok()?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let &(delete, at) = map.get(&(response.to_owned(), ip))?;
        let fresh = now_ms.saturating_sub(at) < REMEMBERED_FOR.as_millis() as i64;
        (fresh && delete > add).then_some(delete)
    }
}

/// The id of the block in force (its last add `block_command_id`, at
/// `updated_at` ms) when that add was decided after `command_id` and came
/// in the last [`REMEMBERED_FOR`]: a delete or an add older than it is
/// stale. Older blocks are not compared: ids start from 1 again when a
/// manager's database is rebuilt, and an operator's unblock must never be
/// taken for stale because of that.
pub fn newer_in_force(
    block_command_id: &str,
    updated_at: i64,
    command_id: &str,
    now_ms: i64,
) -> Option<i64> {
    let newer = block_command_id.parse::<i64>().ok()?;
    let this = command_id.parse::<i64>().ok()?;
    let recent = now_ms.saturating_sub(updated_at) < REMEMBERED_FOR.as_millis() as i64;
    (recent && newer > this).then_some(newer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const IP: &str = "198.51.100.7";

    #[test]
    fn an_add_older_than_a_remembered_delete_is_refused_a_newer_one_is_not() {
        let lifted = Lifted::default();
        let ip: IpAddr = IP.parse().unwrap();
        assert_eq!(lifted.lifted_after("route-null", ip, "5", 0), None);
        lifted.record("route-null", ip, "8", 1_000);
        assert_eq!(lifted.lifted_after("route-null", ip, "5", 2_000), Some(8));
        assert_eq!(lifted.lifted_after("route-null", ip, "9", 2_000), None);
        assert_eq!(lifted.lifted_after("firewall-drop", ip, "5", 2_000), None);
        assert_eq!(lifted.lifted_after("route-null", ip, "c1", 2_000), None);
        // An older delete arriving late does not lower what is remembered.
        lifted.record("route-null", ip, "6", 3_000);
        assert_eq!(lifted.lifted_after("route-null", ip, "7", 3_000), Some(8));
        let later = 3_000 + REMEMBERED_FOR.as_millis() as i64;
        assert_eq!(lifted.lifted_after("route-null", ip, "5", later), None);
    }

    #[test]
    fn a_block_in_force_makes_older_commands_stale_for_a_while_only() {
        assert_eq!(newer_in_force("9", 1_000, "7", 2_000), Some(9));
        assert_eq!(newer_in_force("9", 1_000, "9", 2_000), None);
        assert_eq!(newer_in_force("9", 1_000, "12", 2_000), None);
        assert_eq!(newer_in_force("c1", 1_000, "7", 2_000), None);
        let later = 1_000 + REMEMBERED_FOR.as_millis() as i64;
        assert_eq!(
            newer_in_force("9", 1_000, "7", later),
            None,
            "a rebuilt database"
        );
    }

    #[test]
    fn the_memory_is_bounded() {
        let lifted = Lifted::default();
        for n in 0..=MAX_REMEMBERED as u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            lifted.record("route-null", ip, "2", i64::from(n));
        }
        assert_eq!(lifted.map.lock().unwrap().len(), MAX_REMEMBERED);
        let first = IpAddr::from(0u32.to_be_bytes());
        assert_eq!(
            lifted.lifted_after("route-null", first, "1", 10),
            None,
            "the oldest went"
        );
        let last = IpAddr::from((MAX_REMEMBERED as u32).to_be_bytes());
        assert_eq!(lifted.lifted_after("route-null", last, "1", 10), Some(2));
    }
}
