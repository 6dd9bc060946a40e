//! Group commit for append-only logs: many writers hand records to one thread, which writes
//! them in order and pays one fsync for every record in the batch that asked for it.
//!
//! After a failed write or fsync the journal refuses everything that follows: the page
//! cache may have dropped the data, so pretending later records are durable would be a lie.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The file side of a journal: how records become bytes and where bytes go.
pub trait JournalSink: Send + 'static {
    type Item: Send + 'static;
    /// Appends one encoded record to `buf` and returns its sequence number.
    fn encode(&mut self, item: Self::Item, buf: &mut Vec<u8>) -> u64;
    /// Writes `buf` at the end of the log, then makes it durable if `sync`.
    fn write(&mut self, buf: &[u8], sync: bool) -> io::Result<()>;
}

struct Msg<I> {
    item: Option<I>,
    sync: bool,
    ack: oneshot::Sender<io::Result<u64>>,
}

/// The writer handle; cheap to clone.
pub struct Journal<I> {
    tx: mpsc::UnboundedSender<Msg<I>>,
    failed: Arc<AtomicBool>,
    name: &'static str,
}

impl<I> Clone for Journal<I> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), failed: self.failed.clone(), name: self.name }
    }
}

impl<I> std::fmt::Debug for Journal<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({})", self.name)
    }
}

impl<I: Send + 'static> Journal<I> {
    /// Starts the writer thread for `sink`.
    pub fn spawn<S: JournalSink<Item = I>>(mut sink: S, name: &'static str) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg<I>>();
        let failed = Arc::new(AtomicBool::new(false));
        let failed2 = failed.clone();
        std::thread::Builder::new()
            .name(format!("journal-{name}"))
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                let mut msgs: Vec<Msg<I>> = Vec::new();
                let mut batch: Vec<(u64, oneshot::Sender<io::Result<u64>>)> = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    buf.clear();
                    batch.clear();
                    msgs.push(first);
                    while msgs.len() < 4096 {
                        match rx.try_recv() {
                            Ok(m) => msgs.push(m),
                            Err(_) => break,
                        }
                    }
                    let mut sync = false;
                    for m in msgs.drain(..) {
                        sync |= m.sync;
                        let seq = m.item.map(|i| sink.encode(i, &mut buf)).unwrap_or(0);
                        batch.push((seq, m.ack));
                    }
                    let res = if failed2.load(Ordering::SeqCst) {
                        Err(io::Error::other(format!("{name} journal failed earlier; refusing writes")))
                    } else {
                        sink.write(&buf, sync)
                    };
                    if let Err(e) = &res {
                        tracing::error!(journal = name, error = %e, "journal write failed; no more writes accepted");
                        failed2.store(true, Ordering::SeqCst);
                    }
                    for (seq, ack) in batch.drain(..) {
                        let _ = ack.send(match &res {
                            Ok(()) => Ok(seq),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start journal thread"));
        Self { tx, failed, name }
    }

    /// Appends `item`; with `sync` the call returns once it is on disk. Returns its sequence.
    pub async fn append(&self, item: I, sync: bool) -> io::Result<u64> {
        self.send(Some(item), sync).await
    }

    /// Makes everything appended so far durable.
    pub async fn sync(&self) -> io::Result<()> {
        self.send(None, true).await.map(|_| ())
    }

    /// Whether an earlier write failed (the element must stop taking writes).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    async fn send(&self, item: Option<I>, sync: bool) -> io::Result<u64> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Msg { item, sync, ack })
            .map_err(|_| io::Error::other(format!("{} journal is closed", self.name)))?;
        rx.await.map_err(|_| io::Error::other(format!("{} journal stopped", self.name)))?
    }
}
