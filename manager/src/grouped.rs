//! Small database work that many agent streams ask for at the same
//! moment, done together: the results of a fan-out to ten thousand agents
//! arrive within a second, and so do their openings (admission, Hello,
//! lease) after a manager restart. One transaction each would queue them
//! all on SQLite's single write lock (and on the pool's connections, ahead
//! of operators and ingestion), and one query each costs more in handing
//! it to the database's thread and back than SQLite takes to answer it;
//! here one task does whatever has queued while the previous group was
//! done, in one transaction (or a few statements, for reads).
//!
//! Durability is unchanged: each caller waits until its own write is
//! committed (its stream reads nothing meanwhile, as before). When a
//! group fails, its items are done again one by one, so each caller gets
//! its own answer and one bad item does not fail the others.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::store::{
    AgentHello, AgentRecord, CommandReport, Connected, ResponseRow, Store, StoreError,
};

/// Items in one group at most.
pub const MAX_GROUP: usize = 1000;

/// How a kind of work is done, in groups and alone.
pub trait GroupWork: Send + Sync + 'static {
    /// One caller's item.
    type Item: Send + Sync + 'static;
    /// What the caller gets back.
    type Output: Send + 'static;
    /// Does `items` together (writes in one transaction); one output per
    /// item, in order.
    fn run_group(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;
    /// Does one item (after its group failed).
    fn run_one(
        &self,
        item: &Self::Item,
    ) -> impl Future<Output = Result<Self::Output, StoreError>> + Send;
}

type Reply<W> = oneshot::Sender<Result<<W as GroupWork>::Output, StoreError>>;
type Job<W> = (<W as GroupWork>::Item, Reply<W>);
/// The work and its queue, until the task that owns them starts.
type Idle<W> = Option<(W, mpsc::UnboundedReceiver<Job<W>>)>;

/// The queue of one kind of work; its task starts with the first item
/// (so that building it needs no runtime) and ends when every handle is
/// gone.
pub struct Grouped<W: GroupWork> {
    queue: mpsc::UnboundedSender<Job<W>>,
    idle: Arc<Mutex<Idle<W>>>,
}

impl<W: GroupWork> Clone for Grouped<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            idle: self.idle.clone(),
        }
    }
}

impl<W: GroupWork> std::fmt::Debug for Grouped<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped").finish_non_exhaustive()
    }
}

impl<W: GroupWork> Grouped<W> {
    /// A queue whose groups `writer` does.
    pub fn new(writer: W) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        Self {
            queue,
            idle: Arc::new(Mutex::new(Some((writer, jobs)))),
        }
    }

    /// Queues `item` and waits until it is done (committed, for a
    /// write), with others.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output, StoreError> {
        let task = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((writer, jobs)) = task {
            tokio::spawn(run(writer, jobs));
        }
        let (reply, answer) = oneshot::channel();
        if self.queue.send((item, reply)).is_err() {
            return Err(StoreError::Sqlx(sqlx::Error::PoolClosed));
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Sqlx(sqlx::Error::PoolClosed)))
    }
}

/// Does what queued, group after group, until every handle is gone.
async fn run<W: GroupWork>(writer: W, mut jobs: mpsc::UnboundedReceiver<Job<W>>) {
    let mut group: Vec<Job<W>> = Vec::new();
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (items, replies): (Vec<W::Item>, Vec<Reply<W>>) = group.drain(..).unzip();
        match writer.run_group(&items).await {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(_) => {
                for (item, reply) in items.iter().zip(replies) {
                    let _ = reply.send(writer.run_one(item).await);
                }
            }
        }
    }
}

/// Agents' reports on their commands ([`Store::response_results`]).
#[derive(Debug)]
pub struct CommandResults(pub Store);

impl GroupWork for CommandResults {
    type Item = CommandReport;
    type Output = Option<ResponseRow>;
    async fn run_group(
        &self,
        items: &[CommandReport],
    ) -> Result<Vec<Option<ResponseRow>>, StoreError> {
        self.0.response_results(items).await
    }
    async fn run_one(&self, item: &CommandReport) -> Result<Option<ResponseRow>, StoreError> {
        Ok(self
            .0
            .response_results(std::slice::from_ref(item))
            .await?
            .pop()
            .flatten())
    }
}

/// What new streams carry first ([`Store::responses_for_new_streams`]):
/// one read for a group of streams `(agent, welcomed_at)`.
#[derive(Debug)]
pub struct NewStreamCommands(pub Store);

impl GroupWork for NewStreamCommands {
    type Item = (String, i64);
    type Output = Vec<ResponseRow>;
    async fn run_group(
        &self,
        items: &[(String, i64)],
    ) -> Result<Vec<Vec<ResponseRow>>, StoreError> {
        let streams: Vec<(&str, i64)> = items.iter().map(|(a, t)| (a.as_str(), *t)).collect();
        self.0.responses_for_new_streams(&streams).await
    }
    async fn run_one(&self, item: &(String, i64)) -> Result<Vec<ResponseRow>, StoreError> {
        self.0.responses_for_new_stream(&item.0, item.1).await
    }
}

/// What an agent's Hello said of it, kept until written.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The agent.
    pub agent_id: String,
    /// Agent version.
    pub version: String,
    /// Host name.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// Address it connected from.
    pub address: Option<String>,
    /// When the agent process started (ms), if it said.
    pub started_at: Option<i64>,
    /// The spool it names.
    pub spool_id: String,
}

impl Hello {
    fn fields(&self) -> (&str, AgentHello<'_>) {
        (
            &self.agent_id,
            AgentHello {
                version: &self.version,
                hostname: &self.hostname,
                os: &self.os,
                address: self.address.clone(),
                started_at: self.started_at,
                spool_id: &self.spool_id,
            },
        )
    }
}

/// Agents' Hellos ([`Store::agents_connected`]); each caller gets its
/// agent's record as written and its spool change (`None`: no longer
/// registered).
#[derive(Debug)]
pub struct Hellos(pub Store);

impl GroupWork for Hellos {
    type Item = Hello;
    type Output = Option<Connected>;
    async fn run_group(&self, items: &[Hello]) -> Result<Vec<Self::Output>, StoreError> {
        let hellos: Vec<_> = items.iter().map(Hello::fields).collect();
        self.0.agents_connected(&hellos).await
    }
    async fn run_one(&self, item: &Hello) -> Result<Self::Output, StoreError> {
        let (id, hello) = item.fields();
        self.0.agent_connected(id, &hello).await
    }
}

/// What admitting a stream reads: the record of the agent its
/// certificate names, and whether that certificate is revoked.
#[derive(Debug, Clone)]
pub struct AdmissionAsk {
    /// The agent the certificate names.
    pub agent_id: String,
    /// The certificate's serial.
    pub serial: String,
}

/// The answer to an [`AdmissionAsk`].
#[derive(Debug, Clone)]
pub struct AdmissionFacts {
    /// The agent's record, `None` if it is not registered.
    pub record: Option<AgentRecord>,
    /// Whether the certificate is revoked.
    pub revoked: bool,
}

/// Admissions' reads ([`Store::agents_by_id`], [`Store::revoked_among`]):
/// two statements for a group rather than two per stream.
#[derive(Debug)]
pub struct Admissions(pub Store);

impl GroupWork for Admissions {
    type Item = AdmissionAsk;
    type Output = AdmissionFacts;
    async fn run_group(&self, items: &[AdmissionAsk]) -> Result<Vec<AdmissionFacts>, StoreError> {
        let ids: Vec<&str> = items.iter().map(|a| a.agent_id.as_str()).collect();
        let serials: Vec<&str> = items.iter().map(|a| a.serial.as_str()).collect();
        let records = self.0.agents_by_id(&ids).await?;
        let revoked = self.0.revoked_among(&serials).await?;
        Ok(items
            .iter()
            .zip(records)
            .map(|(ask, record)| AdmissionFacts {
                record,
                revoked: revoked.contains(&ask.serial),
            })
            .collect())
    }
    async fn run_one(&self, item: &AdmissionAsk) -> Result<AdmissionFacts, StoreError> {
        Ok(AdmissionFacts {
            record: self.0.agent(&item.agent_id).await?,
            revoked: self.0.is_revoked(&item.serial).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its transactions; any write of 0 fails.
    #[derive(Default, Clone)]
    struct Counting {
        groups: Arc<AtomicUsize>,
    }

    impl GroupWork for Counting {
        type Item = u32;
        type Output = u32;
        async fn run_group(&self, items: &[u32]) -> Result<Vec<u32>, StoreError> {
            self.groups.fetch_add(1, Ordering::SeqCst);
            if items.contains(&0) {
                return Err(StoreError::Conflict("zero".into()));
            }
            Ok(items.iter().map(|i| i * 10).collect())
        }
        async fn run_one(&self, item: &u32) -> Result<u32, StoreError> {
            match item {
                0 => Err(StoreError::Conflict("zero".into())),
                i => Ok(i * 10),
            }
        }
    }

    // One thread: every write below is queued before the writer task runs.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_queued_together_commit_together_and_a_failure_stays_its_own() {
        let writer = Counting::default();
        let grouped = Grouped::new(writer.clone());
        let answers = futures_join(&grouped, 1..=50).await;
        assert_eq!(answers, (1..=50).map(|i| Ok(i * 10)).collect::<Vec<_>>());
        assert_eq!(writer.groups.load(Ordering::SeqCst), 1);

        // A group holding a failing write: retried one by one.
        let answers = futures_join(&grouped, 0..=9).await;
        assert!(answers[0].is_err());
        assert_eq!(
            answers[1..],
            (1..=9).map(|i| Ok(i * 10)).collect::<Vec<_>>()
        );
        assert_eq!(writer.groups.load(Ordering::SeqCst), 2);
    }

    async fn futures_join(
        grouped: &Grouped<Counting>,
        items: impl Iterator<Item = u32>,
    ) -> Vec<Result<u32, String>> {
        let writes: Vec<_> = items.map(|i| Box::pin(grouped.submit(i))).collect();
        let mut answers = Vec::new();
        for answer in join_all(writes).await {
            answers.push(answer.map_err(|e| e.to_string()));
        }
        answers
    }

    /// Polls every future once in order (queueing every write), then
    /// waits for all.
    async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
                if out.is_none() {
                    match std::pin::Pin::new(&mut *f).poll(cx) {
                        std::task::Poll::Ready(v) => *out = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs.into_iter().flatten().collect()
    }
}
