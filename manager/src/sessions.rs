//! The registry of open agent streams: who is connected, how to reach them,
//! and how to end a stream when its agent is removed or reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
}

#[derive(Debug)]
struct Session {
    generation: u64,
    serial: String,
    sender: AgentSender,
    token: CancellationToken,
    reason: Arc<Mutex<Option<EndReason>>>,
    last_heard: Arc<AtomicI64>,
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
}

impl SessionGuard {
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

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new stream for `agent_id`, ending any older one.
    pub fn register(
        &self,
        agent_id: &str,
        serial: &str,
        sender: AgentSender,
        parent: &CancellationToken,
    ) -> SessionGuard {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let token = parent.child_token();
        let reason = Arc::new(Mutex::new(None));
        let last_heard = Arc::new(AtomicI64::new(crate::store::now_ms()));
        let old = inner.by_agent.insert(
            agent_id.to_string(),
            Session {
                generation,
                serial: serial.to_string(),
                sender,
                token: token.clone(),
                reason: reason.clone(),
                last_heard: last_heard.clone(),
            },
        );
        if let Some(old) = old {
            end(&old, EndReason::Replaced);
        }
        SessionGuard {
            generation,
            token,
            reason,
            last_heard,
        }
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

    /// How many agents are connected.
    pub fn connected_count(&self) -> usize {
        self.lock().by_agent.len()
    }

    /// The sender for an agent's stream, to push commands.
    pub fn sender(&self, agent_id: &str) -> Option<AgentSender> {
        self.lock().by_agent.get(agent_id).map(|s| s.sender.clone())
    }

    /// Ends the streams of removed agents and of revoked certificates;
    /// returns the agent ids whose streams were ended.
    pub fn revoke(&self, removed_ids: &[String], revoked_serials: &[String]) -> Vec<String> {
        let mut inner = self.lock();
        let doomed: Vec<String> = inner
            .by_agent
            .iter()
            .filter(|(id, s)| removed_ids.contains(id) || revoked_serials.contains(&s.serial))
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

fn end(session: &Session, reason: EndReason) {
    *session
        .reason
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(reason);
    session.token.cancel();
}
