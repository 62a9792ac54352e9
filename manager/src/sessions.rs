//! The registry of open agent streams: who is connected, how to reach them,
//! and how to end a stream when its agent is removed or reconnects.
//!
//! One live stream per agent: a second stream for an agent whose stream
//! was heard from within the agent timeout is refused (the certificate may
//! have been stolen; letting the newcomer win would let a thief keep
//! kicking the real agent off). Once the first has been silent that long it
//! is presumed dead (a host that crashed leaves its TCP connection open)
//! and the newcomer takes over, as it does when it presents the agent's
//! just-renewed certificate. Across managers the same rule holds through
//! the agent's lease in the database ([`crate::cluster`]); here each stream
//! keeps the lease's fencing generation it took.
//!
//! A stream is registered before its Welcome (so that a newcomer waits for
//! the stream it replaces to finish its batches, see
//! [`Replaced::finished`]), and only reachable for commands once welcomed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_proto::v1::ManagerMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// The sending half of an agent's stream.
pub type AgentSender = mpsc::Sender<Result<ManagerMessage, Status>>;

/// Why the manager ended a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The agent was removed or its certificate revoked.
    Revoked(String),
    /// The same agent opened a newer stream.
    Replaced,
    /// The manager is shutting down.
    Shutdown,
    /// Another stream took the agent's lease (on another manager, say).
    LeaseLost(String),
}

#[derive(Debug)]
struct Session {
    generation: u64,
    serial: String,
    /// The peer address of the stream, for the log.
    address: Option<String>,
    sender: AgentSender,
    token: CancellationToken,
    reason: Arc<Mutex<Option<EndReason>>>,
    last_heard: Arc<AtomicI64>,
    /// The lease generation the stream took (0 until it took it).
    lease: Arc<AtomicU64>,
    /// Set once the Welcome is sent: commands go only to welcomed streams.
    welcomed: Arc<AtomicBool>,
    /// Cancelled once the stream's task has ended (its batches committed).
    finished: CancellationToken,
}

/// A handle a session task keeps: its cancellation and the reason.
#[derive(Debug, Clone)]
pub struct SessionGuard {
    /// Which registration this is.
    pub generation: u64,
    /// Cancelled when the manager ends the stream.
    pub token: CancellationToken,
    reason: Arc<Mutex<Option<EndReason>>>,
    /// When the agent last sent anything on this stream (epoch ms).
    last_heard: Arc<AtomicI64>,
    lease: Arc<AtomicU64>,
    welcomed: Arc<AtomicBool>,
    /// Cancel (drop the guard of) once the stream's task ended.
    pub finished: CancellationToken,
}

impl SessionGuard {
    /// Records the lease generation the stream took.
    pub fn set_lease(&self, generation: u64) {
        self.lease.store(generation, Ordering::Relaxed);
    }

    /// The stream's Welcome was sent: commands may go to it.
    pub fn welcomed(&self) {
        self.welcomed.store(true, Ordering::Release);
    }

    /// Records that the agent was heard from just now.
    pub fn heard(&self) {
        self.last_heard
            .store(crate::store::now_ms(), Ordering::Relaxed);
    }

    /// Why the stream was ended, once `token` is cancelled.
    pub fn reason(&self) -> Option<EndReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A new stream for `agent_id`.
#[derive(Debug, Clone)]
pub struct NewStream<'a> {
    /// The agent.
    pub agent_id: &'a str,
    /// The serial of the certificate it presented.
    pub serial: &'a str,
    /// Its peer address.
    pub address: Option<String>,
    /// A live stream silent for this long is presumed dead.
    pub stale_after: Duration,
    /// Take over a live stream anyway (the agent's renewed certificate:
    /// only the holder of the live stream was given it).
    pub takeover: bool,
}

/// The agent already has a live stream: the new one is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStream {
    /// The live stream's peer address.
    pub address: Option<String>,
    /// How long ago the live stream was last heard from.
    pub silent_for: Duration,
}

/// An older stream of the agent ended by [`Sessions::register`].
#[derive(Debug, Clone)]
pub struct Replaced {
    /// What it was.
    pub live: LiveStream,
    /// Cancelled once its task has ended: its batches in flight are
    /// committed (or dropped) by then.
    pub finished: CancellationToken,
}

/// Open agent streams by agent id.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_generation: u64,
    by_agent: HashMap<String, Session>,
}

impl Inner {
    /// The agent's open stream, if any.
    fn live(&self, agent_id: &str, now: i64) -> Option<LiveStream> {
        self.by_agent.get(agent_id).map(|s| LiveStream {
            address: s.address.clone(),
            silent_for: Duration::from_millis(
                u64::try_from(now.saturating_sub(s.last_heard.load(Ordering::Relaxed)))
                    .unwrap_or(0),
            ),
        })
    }

    /// The live stream that refuses `new`: one heard from within
    /// `stale_after`, unless `new` takes over.
    fn refusal(&self, new: &NewStream<'_>, now: i64) -> Option<LiveStream> {
        self.live(new.agent_id, now)
            .filter(|live| !new.takeover && live.silent_for < new.stale_after)
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live stream that would make [`Self::register`] refuse `new`.
    pub fn live_stream(&self, new: &NewStream<'_>) -> Option<LiveStream> {
        self.lock().refusal(new, crate::store::now_ms())
    }

    /// Registers a new stream, ending an older one that has been silent
    /// past `stale_after` (or any older one with `takeover`); refuses it
    /// while the older one is live. `Ok` carries the guard and the older
    /// stream it ended, if any.
    pub fn register(
        &self,
        new: NewStream<'_>,
        sender: AgentSender,
        parent: &CancellationToken,
    ) -> Result<(SessionGuard, Option<Replaced>), LiveStream> {
        let mut inner = self.lock();
        let now = crate::store::now_ms();
        if let Some(live) = inner.refusal(&new, now) {
            return Err(live);
        }
        let live = inner.live(new.agent_id, now);
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let token = parent.child_token();
        let reason = Arc::new(Mutex::new(None));
        let last_heard = Arc::new(AtomicI64::new(now));
        let lease = Arc::new(AtomicU64::new(0));
        let welcomed = Arc::new(AtomicBool::new(false));
        let finished = CancellationToken::new();
        let old = inner.by_agent.insert(
            new.agent_id.to_string(),
            Session {
                generation,
                serial: new.serial.to_string(),
                address: new.address,
                sender,
                token: token.clone(),
                reason: reason.clone(),
                last_heard: last_heard.clone(),
                lease: lease.clone(),
                welcomed: welcomed.clone(),
                finished: finished.clone(),
            },
        );
        let replaced = old.zip(live).map(|(old, live)| {
            end(&old, EndReason::Replaced);
            Replaced {
                live,
                finished: old.finished,
            }
        });
        Ok((
            SessionGuard {
                generation,
                token,
                reason,
                last_heard,
                lease,
                welcomed,
                finished,
            },
            replaced,
        ))
    }

    /// The streams and the lease generations they took (taken ones only),
    /// for [`Self::end_lost_lease`].
    pub fn leases(&self) -> Vec<(String, u64)> {
        self.lock()
            .by_agent
            .iter()
            .map(|(id, s)| (id.clone(), s.lease.load(Ordering::Relaxed)))
            .filter(|(_, lease)| *lease != 0)
            .collect()
    }

    /// Ends the agent's stream if it still holds lease `generation`,
    /// which another stream has taken (`why` says which); returns whether
    /// it did.
    pub fn end_lost_lease(&self, agent_id: &str, generation: u64, why: &str) -> bool {
        let mut inner = self.lock();
        let lost = inner
            .by_agent
            .get(agent_id)
            .is_some_and(|s| s.lease.load(Ordering::Relaxed) == generation);
        if lost && let Some(s) = inner.by_agent.remove(agent_id) {
            end(&s, EndReason::LeaseLost(why.to_string()));
        }
        lost
    }

    /// Forgets a stream that ended, unless a newer one replaced it.
    pub fn unregister(&self, agent_id: &str, generation: u64) {
        let mut inner = self.lock();
        if inner
            .by_agent
            .get(agent_id)
            .is_some_and(|s| s.generation == generation)
        {
            inner.by_agent.remove(agent_id);
        }
    }

    /// Whether the agent has an open stream.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().by_agent.contains_key(agent_id)
    }

    /// When the agent last sent anything on its open stream (epoch ms);
    /// `None` when it has no open stream.
    pub fn last_heard(&self, agent_id: &str) -> Option<i64> {
        self.lock()
            .by_agent
            .get(agent_id)
            .map(|s| s.last_heard.load(Ordering::Relaxed))
    }

    /// The agents with an open stream here.
    pub fn connected_ids(&self) -> Vec<String> {
        self.lock().by_agent.keys().cloned().collect()
    }

    /// How many agents are connected.
    pub fn connected_count(&self) -> usize {
        self.lock().by_agent.len()
    }

    /// The sender for an agent's stream, to push commands (once it was
    /// welcomed).
    pub fn sender(&self, agent_id: &str) -> Option<AgentSender> {
        self.lock()
            .by_agent
            .get(agent_id)
            .and_then(Session::commands)
    }

    /// Asks the agent to restart, down its stream here; false when it has
    /// no welcomed stream here (or the stream ended meanwhile).
    pub async fn ask_to_restart(&self, agent_id: &str, requested_by: &str) -> bool {
        let Some(sender) = self.sender(agent_id) else {
            return false;
        };
        let restart = ManagerMessage {
            kind: Some(palisade_proto::v1::manager_message::Kind::Restart(
                palisade_proto::v1::Restart {
                    requested_by: requested_by.to_string(),
                },
            )),
        };
        sender.send(Ok(restart)).await.is_ok()
    }

    /// The senders of `agent_ids`' streams (`None` for agents offline),
    /// read under one lock: for a fan-out.
    pub fn senders<'a>(
        &self,
        agent_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Option<AgentSender>> {
        let inner = self.lock();
        agent_ids
            .into_iter()
            .map(|id| inner.by_agent.get(id).and_then(Session::commands))
            .collect()
    }

    /// Ends the streams of removed agents and of revoked certificates;
    /// returns the agent ids whose streams were ended.
    pub fn revoke(&self, removed_ids: &[String], revoked_serials: &[String]) -> Vec<String> {
        let removed: std::collections::HashSet<&str> =
            removed_ids.iter().map(String::as_str).collect();
        let revoked: std::collections::HashSet<&str> =
            revoked_serials.iter().map(String::as_str).collect();
        let mut inner = self.lock();
        let doomed: Vec<String> = inner
            .by_agent
            .iter()
            .filter(|(id, s)| removed.contains(id.as_str()) || revoked.contains(s.serial.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &doomed {
            if let Some(s) = inner.by_agent.remove(id) {
                end(
                    &s,
                    EndReason::Revoked(format!(
                        "agent {id} was removed; its certificate is revoked"
                    )),
                );
            }
        }
        doomed
    }
}

impl Session {
    /// The sender, once the stream's Welcome went out.
    fn commands(&self) -> Option<AgentSender> {
        self.welcomed
            .load(Ordering::Acquire)
            .then(|| self.sender.clone())
    }
}

fn end(session: &Session, reason: EndReason) {
    *session
        .reason
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(reason);
    session.token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(takeover: bool, stale_after: Duration) -> NewStream<'static> {
        NewStream {
            agent_id: "001",
            serial: "aa",
            address: Some("192.0.2.1".into()),
            stale_after,
            takeover,
        }
    }

    #[tokio::test]
    async fn a_second_stream_is_refused_while_the_first_is_live() {
        let sessions = Sessions::default();
        let parent = CancellationToken::new();
        let (tx, _rx) = mpsc::channel(1);
        let (first, replaced) = sessions
            .register(stream(false, Duration::from_secs(60)), tx.clone(), &parent)
            .unwrap();
        assert!(replaced.is_none());
        // Commands reach it only once welcomed.
        assert!(sessions.sender("001").is_none());
        first.welcomed();
        assert!(sessions.sender("001").is_some());
        let live = sessions
            .register(stream(false, Duration::from_secs(60)), tx.clone(), &parent)
            .unwrap_err();
        assert_eq!(live.address.as_deref(), Some("192.0.2.1"));
        assert!(!first.token.is_cancelled());

        // Silent past the timeout (here: no timeout at all), it is taken over.
        let (second, replaced) = sessions
            .register(stream(false, Duration::ZERO), tx.clone(), &parent)
            .unwrap();
        let replaced = replaced.unwrap();
        assert!(!replaced.finished.is_cancelled());
        first.finished.cancel();
        assert!(replaced.finished.is_cancelled());
        assert!(first.token.is_cancelled());
        assert_eq!(first.reason(), Some(EndReason::Replaced));
        // The agent's renewed certificate takes over a live stream.
        sessions
            .register(stream(true, Duration::from_secs(60)), tx, &parent)
            .unwrap();
        assert!(second.token.is_cancelled());
        // The ended ones do not unregister the live one.
        sessions.unregister("001", first.generation);
        sessions.unregister("001", second.generation);
        assert!(sessions.is_connected("001"));

        // A lease taken elsewhere ends the stream holding the older one.
        let (third, _) = sessions
            .register(
                stream(true, Duration::from_secs(60)),
                tx_for_lease(),
                &parent,
            )
            .unwrap();
        assert!(sessions.leases().is_empty());
        third.set_lease(7);
        assert_eq!(sessions.leases(), [("001".to_string(), 7)]);
        assert!(!sessions.end_lost_lease("001", 6, "taken by b"));
        assert!(sessions.end_lost_lease("001", 7, "taken by b"));
        assert!(third.token.is_cancelled());
        assert_eq!(
            third.reason(),
            Some(EndReason::LeaseLost("taken by b".into()))
        );
        assert!(!sessions.is_connected("001"));
    }

    fn tx_for_lease() -> AgentSender {
        mpsc::channel(1).0
    }
}
