//! The active-response circuit breaker: more new blocks on one agent in a
//! minute than `[global] max_new_blocks_per_minute` means something is
//! wrong (a decoder steered by crafted log lines, a rule that matches
//! everything, a flood of spoofed sources), and blocking on would cut the
//! host off from its own users. So the breaker trips: new automatic blocks
//! on that agent stop (each is refused and listed by `palisadectl
//! refusals`), an alert (rule [`RULE_ID`]) says so and how to resume, and
//! the state is kept in the database, so a restart does not close it.
//! Unblocks and expiries go on; blocks an operator runs by hand are not
//! counted or stopped. `palisadectl breaker reset AGENT` closes it, and
//! only blocks issued after the reset count towards the next trip.
//!
//! A "new block" is an address not already blocked by an automatic
//! response on that agent within the minute (a repeat extends a block).

use palisade_engine::alert::Alert;
use palisade_engine::rule::RuleOptions;
use tracing::warn;

use crate::pipeline::analysis::{Judged, Origin};
use crate::store::{Store, StoreError, StoredAlert, now_ms};

/// The rule id of the alert raised when a breaker trips (Palisade's own;
/// OSSEC's rules leave 690-699 unused).
pub const RULE_ID: u32 = 690;
/// Its level: an operator must look now.
pub const RULE_LEVEL: u32 = 12;
/// The default limit: a busy web server under a real scan sees a few new
/// offenders a minute; sixty is a storm.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 60;

const MINUTE_MS: i64 = 60_000;

/// The command that closes a tripped breaker.
pub fn resume_command(agent_id: &str) -> String {
    format!("palisadectl breaker reset {agent_id}")
}

/// Whether a new block may be issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Allowed,
    /// No: the breaker is open. `alert` is set when this block tripped it.
    Refused {
        /// Why, for the refusal record.
        reason: String,
        /// The alert to store and publish, the first time.
        alert: Option<Box<Alert>>,
    },
}

/// The breaker; `max_per_minute` 0 turns it off.
#[derive(Debug, Clone)]
pub struct Breaker {
    store: Store,
    max_per_minute: u32,
}

impl Breaker {
    /// A breaker over `store`'s responses.
    pub fn new(store: Store, max_per_minute: u32) -> Self {
        Self {
            store,
            max_per_minute,
        }
    }

    fn refused(&self, agent_id: &str) -> String {
        format!(
            "the circuit breaker of agent {agent_id} is tripped (more than {} new blocks in a minute); resume with: {}",
            self.max_per_minute,
            resume_command(agent_id)
        )
    }

    /// Decides on a new automatic block of `srcip` on `agent_id`, tripping
    /// the breaker when it is one too many.
    pub async fn admit(&self, agent_id: &str, srcip: &str) -> Result<Admission, StoreError> {
        if self.max_per_minute == 0 {
            return Ok(Admission::Allowed);
        }
        let state = self.store.breaker(agent_id).await?;
        if state.tripped_at.is_some() {
            return Ok(Admission::Refused {
                reason: self.refused(agent_id),
                alert: None,
            });
        }
        let since = (now_ms() - MINUTE_MS).max(state.reset_at.map_or(i64::MIN, |r| r + 1));
        let (blocks, repeat) = self.store.recent_blocks(agent_id, srcip, since).await?;
        if repeat || blocks < self.max_per_minute {
            return Ok(Admission::Allowed);
        }
        let tripped_now = self
            .store
            .trip_breaker(agent_id, blocks, self.max_per_minute)
            .await?;
        let alert = tripped_now.then(|| {
            warn!(
                agent = %agent_id,
                new_blocks = blocks,
                max_per_minute = self.max_per_minute,
                resume = %resume_command(agent_id),
                "Circuit breaker tripped: new blocks on this agent are stopped."
            );
            Box::new(self.alert(agent_id, blocks))
        });
        Ok(Admission::Refused {
            reason: self.refused(agent_id),
            alert,
        })
    }

    fn alert(&self, agent_id: &str, blocks: u32) -> Alert {
        let description = format!(
            "Palisade: active-response circuit breaker tripped on agent {agent_id}: {blocks} new blocks within a minute reached the limit of {}; new blocks there are stopped (unblocks and expiries go on). Check the alerts and blocks, then resume with: {}",
            self.max_per_minute,
            resume_command(agent_id)
        );
        Alert::without_event(
            RULE_ID,
            RULE_LEVEL,
            description,
            "palisade,active_response,circuit_breaker,",
            RuleOptions {
                no_ar: true,
                ..RuleOptions::default()
            },
            "palisade-manager",
        )
    }

    /// Stores the alert the breaker raised for `origin`'s agent; it has no
    /// event of its own.
    pub async fn store_alert(
        &self,
        origin: &Origin,
        alert: Alert,
    ) -> Result<StoredAlert, StoreError> {
        let agent_id = origin.agent_id.as_deref().unwrap_or("000");
        let judged = [Judged { sequence: 0, alert }];
        let stored = self
            .store
            .store_events(agent_id, &[], &judged, false)
            .await?;
        let [Judged { alert, .. }] = judged;
        Ok(StoredAlert {
            id: stored.alert_ids.first().copied().unwrap_or_default(),
            origin: origin.clone(),
            event_sequence: None,
            alert,
        })
    }

    /// Closes the breaker of `agent_id`; when it had tripped, returns when.
    pub async fn reset(&self, agent_id: &str) -> Result<Option<i64>, StoreError> {
        self.store.reset_breaker(agent_id).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::ManagerConfig;
    use crate::outputs::Outputs;
    use crate::responder::{Responder, Targets};
    use crate::sessions::Sessions;
    use crate::store::fixtures;

    const CONFIG: &str = "[server]\nlisten = \"127.0.0.1:1514\"\n\
        [[active_response]]\ncommand = \"route-null\"\nlocation = \"local\"\nrules_id = [31151]\ntimeout = \"600s\"\n";

    struct Manager {
        dir: tempfile::TempDir,
        store: Store,
        agent: String,
    }

    impl Manager {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("m.db")).await.unwrap();
            let (agent, _) = store
                .add_agent("web01", "any", |_| Ok::<_, String>(("aa".to_string(), ())))
                .await
                .unwrap();
            Self { dir, store, agent }
        }

        /// The store again, as after a restart.
        async fn reopen(&mut self) {
            self.store.close().await;
            self.store = Store::open(&self.dir.path().join("m.db")).await.unwrap();
        }

        fn responder(&self, limit: u32, outputs: &Outputs) -> Responder {
            let config =
                ManagerConfig::parse(CONFIG, &self.dir.path().join("manager.toml")).unwrap();
            Responder::new(
                config.responses,
                vec![],
                vec![],
                self.store.clone(),
                Sessions::default(),
            )
            .with_breaker_limit(limit)
            .with_outputs(outputs.clone())
        }

        /// Stores a 31151 alert about `srcip` and lets `responder` act on it.
        async fn scan_from(&self, responder: &Responder, srcip: &str) {
            let mut a = fixtures::stored_alert(0, 10);
            a.alert.srcip = Some(srcip.into());
            let judged = [Judged {
                sequence: 0,
                alert: a.alert.clone(),
            }];
            a.id = self
                .store
                .store_events(&self.agent, &[], &judged, false)
                .await
                .unwrap()
                .alert_ids[0];
            responder.on_alerts(&[a]).await.unwrap();
        }

        async fn blocked(&self) -> Vec<String> {
            let mut ips: Vec<String> = self
                .store
                .blocks(None, None)
                .await
                .unwrap()
                .into_iter()
                .map(|b| b.srcip)
                .collect();
            ips.sort();
            ips
        }
    }

    fn outputs() -> Outputs {
        Outputs::new(Vec::new(), Default::default())
    }

    #[tokio::test]
    async fn a_storm_trips_the_breaker_until_an_operator_resets_it() {
        let mut m = Manager::new().await;
        let outputs = outputs();
        let mut followed = outputs.subscribe();
        let r = m.responder(3, &outputs);
        for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.2"] {
            m.scan_from(&r, ip).await;
        }
        assert_eq!(
            m.blocked().await,
            ["203.0.113.1", "203.0.113.2", "203.0.113.3"],
            "three new blocks and a repeat pass"
        );
        assert!(followed.try_recv().is_err(), "no breaker alert yet");

        // The fourth new address in the minute trips it.
        m.scan_from(&r, "203.0.113.4").await;
        assert_eq!(m.blocked().await.len(), 3, "the fourth was blocked");
        let raised = followed.try_recv().unwrap();
        assert_eq!(raised.alert.rule_id, RULE_ID);
        assert_eq!(raised.alert.level, RULE_LEVEL);
        assert_eq!(raised.origin.agent_id.as_deref(), Some(m.agent.as_str()));
        assert!(
            raised
                .alert
                .description
                .contains("circuit breaker tripped on agent 001"),
            "{}",
            raised.alert.description
        );
        assert!(
            raised
                .alert
                .description
                .contains("resume with: palisadectl breaker reset 001"),
            "{}",
            raised.alert.description
        );
        assert!(raised.alert.options.no_ar);
        let stored = m
            .store
            .alerts(&crate::store::AlertFilter {
                rule_id: Some(RULE_ID),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "the alert is stored");
        let refusals = m.store.refusals(10).await.unwrap();
        assert_eq!(refusals[0].srcip.as_deref(), Some("203.0.113.4"));
        assert_eq!(refusals[0].agent_id.as_deref(), Some("001"));
        assert!(
            refusals[0]
                .reason
                .contains("resume with: palisadectl breaker reset 001"),
            "{}",
            refusals[0].reason
        );

        // Tripped it stays, across a restart, without a second alert;
        // unblocks go on.
        m.reopen().await;
        let r = m.responder(3, &outputs);
        m.scan_from(&r, "203.0.113.5").await;
        assert_eq!(m.blocked().await.len(), 3);
        assert!(followed.try_recv().is_err(), "one alert per trip");
        assert_eq!(m.store.refusals(10).await.unwrap().len(), 2);
        let lifted = r.unblock("203.0.113.1", Targets::All).await.unwrap();
        assert_eq!(lifted.command_ids.len(), 1);

        // Reset: new blocks resume, counted from the reset.
        assert!(r.breaker().reset("001").await.unwrap().is_some());
        assert_eq!(r.breaker().reset("001").await.unwrap(), None);
        for ip in ["203.0.113.6", "203.0.113.7", "203.0.113.8"] {
            m.scan_from(&r, ip).await;
        }
        assert!(m.blocked().await.contains(&"203.0.113.8".to_string()));
        assert!(followed.try_recv().is_err());
        m.scan_from(&r, "203.0.113.9").await;
        assert_eq!(followed.try_recv().unwrap().alert.rule_id, RULE_ID);
    }

    #[tokio::test]
    async fn zero_turns_it_off() {
        let m = Manager::new().await;
        let outputs = outputs();
        let r = m.responder(0, &outputs);
        for i in 1..=5 {
            m.scan_from(&r, &format!("203.0.113.{i}")).await;
        }
        assert_eq!(m.blocked().await.len(), 5);
    }

    #[test]
    fn the_limit_is_configurable_and_defaults_to_sixty() {
        let path = std::path::Path::new("/nonexistent/manager.toml");
        let c = ManagerConfig::parse(CONFIG, path).unwrap();
        assert_eq!(c.max_new_blocks_per_minute, DEFAULT_MAX_PER_MINUTE);
        let c = ManagerConfig::parse(
            &format!("{CONFIG}[global]\nmax_new_blocks_per_minute = 5\n"),
            path,
        )
        .unwrap();
        assert_eq!(c.max_new_blocks_per_minute, 5);
    }
}
