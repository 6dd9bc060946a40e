//! Group commit of admin changes. openraft 0.9 appends each proposed entry to the leader's
//! log on its own and waits for that append to be flushed before it appends the next, so
//! N concurrent changes cost N appends with N `fdatasync`s in a row before any of them can
//! travel to the followers. The proposer puts the changes that arrive while one proposal is
//! in the log into the next entry together ([`Op::Batch`]): one append, one sync and one
//! replication round for all of them. Each change keeps its own actor and address, is
//! applied on its own in order (its own answer, refusal and audit entry, exactly as if it
//! had had an entry of its own), and a lone change is proposed as it is.
//!
//! Rolling upgrades from a version without batches: upgrade the followers first and the
//! leader last (only a leader proposes, so the old leader never writes a batch an old
//! follower could not read).

use crate::state::Op;
use crate::types::{NodeId, Raft, Request, Response};
use chrono::Utc;
use openraft::error::{ClientWriteError, RaftError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Changes carried by one entry at most.
pub const MAX_BATCH: usize = 256;

/// Why a change got no answer from the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// This node does not lead (the leader's id, if known).
    NotLeader(Option<NodeId>),
    /// A membership change was refused.
    Membership(String),
    /// Raft has stopped.
    Stopped(String),
    /// Not committed within the write timeout (it may still be, later).
    TimedOut,
}

type Answer = Result<Response, Unanswered>;

struct Pending {
    req: Request,
    answer: oneshot::Sender<Answer>,
}

/// Hands changes to the node's proposer task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the proposer task for `raft`; a proposal not committed within `timeout` is
    /// answered [`Unanswered::TimedOut`] and the next one goes ahead.
    pub fn start(raft: Raft, timeout: Duration) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, timeout));
        Proposer { tx }
    }

    /// Proposes `req` and waits for its answer. A caller that stops waiting before its
    /// change is proposed takes it back (it is never proposed).
    pub async fn propose(&self, req: Request) -> Answer {
        let stopped = || Unanswered::Stopped("the proposer has stopped".to_owned());
        let (answer, rx) = oneshot::channel();
        self.tx.send(Pending { req, answer }).map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>, timeout: Duration) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        batch.retain(|p| !p.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        // The proposal's time, so the chain's times follow its order.
        let now = Utc::now();
        let (mut reqs, answers): (Vec<Request>, Vec<oneshot::Sender<Answer>>) =
            batch.into_iter().map(|p| (Request { at: now, ..p.req }, p.answer)).unzip();
        let entry = match reqs.len() {
            1 => reqs.remove(0),
            _ => Request { actor: String::new(), from: None, at: now, op: Op::Batch { changes: reqs } },
        };
        let n = answers.len();
        let result = match tokio::time::timeout(timeout, raft.client_write(entry)).await {
            Err(_) => Err(Unanswered::TimedOut),
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Unanswered::NotLeader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(Unanswered::Membership(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(Unanswered::Stopped(e.to_string())),
        };
        let results: Vec<Answer> = match result {
            Ok(Response::Batch(each)) if n > 1 && each.len() == n => each.into_iter().map(Ok).collect(),
            Ok(one) if n == 1 => vec![Ok(one)],
            Ok(other) => {
                let why = format!("the state machine answered {n} changes with {other:?}");
                vec![Err(Unanswered::Stopped(why)); n]
            }
            Err(e) => vec![Err(e); n],
        };
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result);
        }
    }
}
