//! `FollowAlerts`: one operator's live view of the alerts.
//!
//! The stream subscribes to the alerts published after each commit before
//! it reads the store, so nothing falls between the backlog and the live
//! feed; ids at or below what the backlog covered, and ids already sent,
//! are not sent twice. A follower that lags behind the broadcast re-reads
//! the store from the last id it is sure of. The backlog (the newest
//! `limit` alerts) is read from the store forwards in pages, from where it
//! begins, so it costs no more memory for 100,000 alerts than for 10.

use std::collections::BTreeSet;
use std::sync::Arc;

use palisade_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use tracing::warn;

use crate::store::{AlertFilter, Store, StoredAlert};

/// Alerts read from the store per page when a follower catches up.
const FOLLOW_PAGE: u32 = 1000;

/// One `FollowAlerts` stream.
pub(super) struct Follower<'a> {
    pub store: &'a Store,
    /// Names the agent of the manager's own events.
    pub hostname: &'a str,
    pub filter: AlertFilter,
    pub tx: &'a mpsc::Sender<Result<pb::Alert, Status>>,
    /// Every matching alert with an id up to this was sent or deliberately
    /// skipped (older than the requested backlog).
    boundary: i64,
    /// Ids above `boundary` already sent.
    sent: BTreeSet<i64>,
}

/// What a send to the operator came to.
enum Sent {
    /// On the way.
    Yes,
    /// The operator went away: stop quietly.
    Gone,
}

impl<'a> Follower<'a> {
    pub fn new(
        store: &'a Store,
        hostname: &'a str,
        filter: AlertFilter,
        tx: &'a mpsc::Sender<Result<pb::Alert, Status>>,
    ) -> Self {
        Self {
            store,
            hostname,
            filter,
            tx,
            boundary: 0,
            sent: BTreeSet::new(),
        }
    }

    /// Sends the backlog (everything after `after_id`, or else the newest
    /// `limit`), then each new matching alert until the feed closes or the
    /// operator leaves.
    pub async fn run(
        mut self,
        mut feed: broadcast::Receiver<Arc<StoredAlert>>,
        after_id: i64,
        limit: u32,
    ) -> Result<(), Status> {
        self.boundary = if after_id > 0 {
            after_id
        } else {
            let mut newest = self.filter.clone();
            newest.after_id = 0;
            // The backlog starts after the `limit`th newest; with none
            // asked for, after the newest.
            match self
                .store
                .nth_newest_alert_id(&newest, limit.max(1))
                .await?
            {
                Some(id) if limit == 0 => id,
                Some(id) => id - 1,
                None => 0,
            }
        };
        if (after_id > 0 || limit > 0)
            && let Sent::Gone = self.catch_up().await?
        {
            return Ok(());
        }
        loop {
            match feed.recv().await {
                Ok(published) => {
                    let id = published.id;
                    if id <= self.boundary
                        || self.sent.contains(&id)
                        || !matches(&self.filter, &published)
                    {
                        continue;
                    }
                    if let Sent::Gone = self.send(std::slice::from_ref(published.as_ref())).await? {
                        return Ok(());
                    }
                    self.sent.insert(id);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "Alert follower fell behind; reading the store.");
                    if let Sent::Gone = self.catch_up().await? {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Sends `alerts`, each with the responses it caused.
    async fn send(&self, alerts: &[StoredAlert]) -> Result<Sent, Status> {
        for message in super::alert_messages(self.store, alerts, self.hostname).await? {
            if self.tx.send(Ok(message)).await.is_err() {
                return Ok(Sent::Gone);
            }
        }
        Ok(Sent::Yes)
    }

    /// Sends every matching alert above `boundary` not sent yet, oldest
    /// first, and moves `boundary` past them.
    async fn catch_up(&mut self) -> Result<Sent, Status> {
        loop {
            let mut page = self.filter.clone();
            page.after_id = self.boundary;
            page.limit = FOLLOW_PAGE;
            let mut rows = self.store.alerts_after(&page).await?;
            let full = rows.len() == FOLLOW_PAGE as usize;
            if let Some(last) = rows.last() {
                self.boundary = self.boundary.max(last.id);
            }
            rows.retain(|a| !self.sent.contains(&a.id));
            if let Sent::Gone = self.send(&rows).await? {
                return Ok(Sent::Gone);
            }
            let boundary = self.boundary;
            self.sent.retain(|&id| id > boundary);
            if !full {
                return Ok(Sent::Yes);
            }
        }
    }
}

/// Whether a published alert passes a follower's filter (as the store's
/// query would).
fn matches(filter: &AlertFilter, stored: &StoredAlert) -> bool {
    let alert = &stored.alert;
    filter
        .since
        .is_none_or(|since| alert.time.as_millisecond() >= since)
        && alert.level >= filter.min_level
        && filter.rule_id.is_none_or(|r| alert.rule_id == r)
        && filter
            .agent_id
            .as_ref()
            .is_none_or(|a| stored.origin.agent_id.as_ref() == Some(a))
        && filter
            .srcip
            .as_ref()
            .is_none_or(|ip| alert.srcip.as_ref() == Some(ip))
}
