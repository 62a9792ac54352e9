//! A TCP relay on loopback: a second address for one real manager, which a
//! test opens and closes to watch an agent move between the manager
//! addresses it lists (the bytes, mutual TLS included, pass through
//! untouched). Closing the relay also cuts the connections through it, as
//! a manager host going away would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A relay from its own loopback address to `target`.
pub struct Relay {
    /// Where it listens while open.
    pub addr: SocketAddr,
    target: SocketAddr,
    open: Arc<AtomicUsize>,
    accepting: Option<JoinHandle<()>>,
}

/// Counts a connection as open until dropped (also when its task is
/// aborted).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    /// A relay to `target` on a free port, not listening yet.
    pub fn new(target: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            addr: crate::process::free_port()?,
            target,
            open: Arc::new(AtomicUsize::new(0)),
            accepting: None,
        })
    }

    /// Starts listening and relaying.
    pub async fn open(&mut self) -> anyhow::Result<()> {
        self.close();
        let listener = TcpListener::bind(self.addr).await?;
        let (target, open) = (self.target, self.open.clone());
        self.accepting = Some(tokio::spawn(async move {
            // Dropped with this task when the relay closes: every
            // connection is cut.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let counted = Counted::new(&open);
                connections.spawn(async move {
                    let _counted = counted;
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
        Ok(())
    }

    /// Stops listening and cuts every connection through the relay.
    pub fn close(&mut self) {
        if let Some(task) = self.accepting.take() {
            task.abort();
        }
    }

    /// Connections open through the relay now.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.close();
    }
}
