//! The admin node's own series on `/metrics`: Raft (term, leadership, log and apply
//! positions, voters, leader changes seen) and the audit chain (its head, and a check that
//! follows it: every entry's link, hash and signature are verified in the background, so a
//! broken chain shows on a dashboard, not at the next audit). The check yields to writes:
//! while the node applies many changes it verifies few entries per second and catches up
//! when the writes calm down.

use crate::node::Node;
use artstore_shared::audit_chain::{ChainCheck, ChainKey};
use artstore_shared::health::Health;
use std::sync::Arc;
use std::time::Duration;

/// Entries the background check verifies per second at most (a signature check each,
/// about 50 µs of CPU).
const CHECK_PER_TICK: usize = 5000;
/// ... and while the node applies more than [`BUSY_APPLIES`] changes a second.
const CHECK_PER_BUSY_TICK: usize = 200;
const BUSY_APPLIES: u64 = 100;

/// Runs until aborted.
pub async fn run(node: Arc<Node>, health: Health) {
    let m = health.metrics();
    let term = m.gauge("raft_term", "Current Raft term");
    let leader = m.gauge("raft_leader", "1 while this node is the leader");
    let has_leader = m.gauge("raft_has_leader", "1 while this node knows a leader");
    let last_log = m.gauge("raft_last_log_index", "Index of the last entry in this node's log");
    let applied = m.gauge("raft_last_applied_index", "Index of the last entry applied to the state");
    let lag = m.gauge("raft_apply_lag_entries", "Entries in the log not applied yet");
    let snapshot = m.gauge("raft_snapshot_index", "Index the last snapshot covers");
    let voters = m.gauge("raft_voters", "Voting members of the cluster");
    let changes = m.counter("raft_leader_changes", "Leader changes this node has seen");
    let audit_last = m.gauge("admin_audit_last_sequence", "Last audit entry in this node's segments");
    let audit_checked = m.gauge("admin_audit_verified_sequence", "Audit entries verified by the background check");
    let audit_problems = m.gauge("admin_audit_problems", "Broken links, hashes or signatures the check found");
    let audit_gap = m.gauge("admin_audit_gap_entries", "Audit entries this node still fetches from a peer");
    let mut check = Some(ChainCheck::new(ChainKey::Recorded(None)));
    let mut seen_leader = None;
    let mut applied_before = 0;
    loop {
        let r = node.raft.metrics().borrow().clone();
        term.set(r.current_term as i64);
        leader.set(i64::from(r.current_leader == Some(node.id)));
        has_leader.set(i64::from(r.current_leader.is_some()));
        if r.current_leader.is_some() && r.current_leader != seen_leader {
            if seen_leader.is_some() {
                changes.inc();
            }
            seen_leader = r.current_leader;
        }
        let (log, app) = (r.last_log_index.unwrap_or(0), r.last_applied.map_or(0, |l| l.index));
        last_log.set(log as i64);
        applied.set(app as i64);
        lag.set(log.saturating_sub(app) as i64);
        snapshot.set(r.snapshot.map_or(0, |l| l.index) as i64);
        voters.set(r.membership_config.membership().voter_ids().count() as i64);
        audit_last.set(node.sm.audit_written().seq as i64);
        audit_gap.set(node.sm.audit_gap().map_or(0, |(have, until)| until - have) as i64);
        let busy = app.saturating_sub(applied_before) > BUSY_APPLIES;
        applied_before = app;
        if let Some(mut c) = check.take() {
            let n = node.clone();
            let budget = if busy { CHECK_PER_BUSY_TICK } else { CHECK_PER_TICK };
            check = tokio::task::spawn_blocking(move || {
                if let Ok(entries) = n.sm.read_audit(c.checked_up_to(), budget) {
                    for e in &entries {
                        c.push(e);
                    }
                }
                c
            })
            .await
            .ok();
            if let Some(c) = &check {
                audit_checked.set(c.checked_up_to() as i64);
                audit_problems.set(c.problems() as i64);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
