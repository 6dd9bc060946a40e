//! Three-node clusters in this process over real HTTP: leader loss, restart and catch-up,
//! a node cut off by the fault-injecting network, and membership changes.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::*;

fn policy_names(c: &Cluster, id: u64) -> BTreeSet<String> {
    c.nodes[&id].node.read(|s| s.policies.keys().cloned().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_elects_a_new_leader_and_keeps_every_acknowledged_change() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    let token = admin_token(&c.url(1)).await;

    // Writes through every node: followers forward to the leader.
    let mut acked = BTreeSet::new();
    for i in 0..12u64 {
        let via = c.url(1 + i % 3);
        let name = format!("before-{i}");
        let r = post_json(&via, "/api/v1/retention-policies", &token, policy(&name)).await;
        assert_eq!(r.status(), 201, "write via {via}: {}", r.text().await.unwrap());
        acked.insert(name);
    }

    // The leader dies.
    c.nodes.get_mut(&leader).unwrap().stop().await;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let t0 = Instant::now();
    let new_leader = c.leader_among(&rest).await;
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} after {:?}", t0.elapsed());

    for i in 0..6u64 {
        let via = c.url(rest[(i % 2) as usize]);
        let name = format!("after-{i}");
        let r = post_json(&via, "/api/v1/retention-policies", &token, policy(&name)).await;
        assert_eq!(r.status(), 201, "write via {via} after failover: {}", r.text().await.unwrap());
        acked.insert(name);
    }
    let target = c.applied(new_leader);
    c.wait_applied(&rest, target).await;
    for id in &rest {
        assert_eq!(policy_names(&c, *id), acked, "node {id}");
    }

    // The old leader comes back and catches up from its own log plus the new leader's.
    c.restart(leader).await;
    c.wait_applied(&[leader], target).await;
    assert_eq!(policy_names(&c, leader), acked);
    // Every node holds the same audit chain, link for link.
    let chain = |id: u64| c.nodes[&id].node.sm.read_audit(0, usize::MAX).unwrap();
    let reference = chain(new_leader);
    assert!(reference.len() >= acked.len());
    for id in [1, 2, 3] {
        assert_eq!(chain(id)[..reference.len()], reference[..], "node {id}");
    }
    // Reads on the restarted node answer the same.
    let (status, v) = get_json(&c.url(leader), "/api/v1/retention-policies", &token).await;
    assert_eq!(status, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), acked.len());
    for n in c.nodes.values_mut() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_others_cannot_commit() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    let token = admin_token(&c.url(leader)).await;
    let r = post_json(&c.url(leader), "/api/v1/retention-policies", &token, policy("base")).await;
    assert_eq!(r.status(), 201);

    // Cut the leader off: it still believes it leads, but cannot reach a majority.
    c.faults.isolate(leader);
    let r = post_json(&c.url(leader), "/api/v1/retention-policies", &token, policy("lost")).await;
    assert_eq!(r.status(), 503, "an isolated leader must not acknowledge");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "https://artstore.dev/problems/no-quorum", "{body}");

    // The majority elects a new leader and goes on.
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = c.leader_among(&rest).await;
    let r = post_json(&c.url(new_leader), "/api/v1/retention-policies", &token, policy("kept")).await;
    assert_eq!(r.status(), 201);

    // A cut-off follower cannot commit either (it forwards nothing while cut off).
    let follower = *rest.iter().find(|i| **i != new_leader).unwrap();
    c.faults.isolate(follower);
    let r = post_json(&c.url(follower), "/api/v1/retention-policies", &token, policy("lost-too")).await;
    assert_eq!(r.status(), 503);
    c.faults.heal(follower);

    // Healed, the old leader drops its uncommitted entry and follows.
    c.faults.heal(leader);
    let target = c.applied(new_leader);
    c.wait_applied(&[1, 2, 3], target).await;
    for id in [1, 2, 3] {
        let names = policy_names(&c, id);
        assert!(names.contains("kept") && names.contains("base"), "node {id}: {names:?}");
        assert!(
            !names.contains("lost") && !names.contains("lost-too"),
            "node {id} kept an uncommitted change: {names:?}"
        );
    }
    for n in c.nodes.values_mut() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_as_learners_then_voters_and_leave() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    let token = admin_token(&c.url(leader)).await;
    for i in 0..5 {
        let r = post_json(&c.url(leader), "/api/v1/retention-policies", &token, policy(&format!("p{i}"))).await;
        assert_eq!(r.status(), 201);
    }
    // A fourth node names the whole cluster in its peers, so it never initialises itself.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    c.addrs.insert(4, l.local_addr().unwrap());
    drop(l);
    c.restart(4).await;
    let url4 = c.url(4);
    // Sent to a follower: forwarded to the leader.
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    let r = post_json(&c.url(follower), "/api/v1/cluster/members", &token, json!({"node_id": 4, "url": url4})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, v) = get_json(&c.url(leader), "/api/v1/cluster", &token).await;
    let voters: Vec<u64> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4], "{v}");
    c.wait_applied(&[4], c.applied(leader)).await;
    assert_eq!(policy_names(&c, 4).len(), 5);

    let r = c_delete(&c.url(leader), "/api/v1/cluster/members/4", &token).await;
    assert_eq!(r, 200);
    let (_, v) = get_json(&c.url(leader), "/api/v1/cluster", &token).await;
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(c_delete(&c.url(leader), "/api/v1/cluster/members/9", &token).await, 404);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in c.nodes.values_mut() {
        n.stop().await;
    }
}

async fn c_delete(base: &str, path: &str, token: &str) -> u16 {
    http().delete(format!("{base}{path}")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// Changes that arrive together travel in one log entry (group commit), yet each gets its
/// own answer and its own audit entry, in order, on every node; a lone change keeps an
/// entry of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_proposed_together_share_an_entry_and_keep_their_own_answers() {
    use artstore_admin::state::{Op, Policy};
    use artstore_shared::ErrorCode;
    use openraft::EntryPayload;
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader_among(&[1, 2, 3]).await;
    let node = c.nodes[&leader].node.clone();
    let log_before = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let chain_before = node.sm.audit_written().seq;
    // 96 changes at once: 64 new policies, and 32 that repeat one of them (refused).
    let now = chrono::Utc::now();
    let writes = (0..96).map(|i| {
        let node = node.clone();
        let policy = Policy {
            name: format!("group-{}", i % 64),
            term: "P1Y".into(),
            mode: "governance".into(),
            disposition: "review".into(),
            description: format!("change {i}"),
            in_use: false,
            created_at: now,
            updated_at: now,
        };
        async move { node.write(&format!("user-{i}"), None, Op::CreatePolicy { policy }).await.map_err(|e| e.code) }
    });
    let answers = futures_util::future::join_all(writes).await;
    let created = answers.iter().filter(|a| a.is_ok()).count();
    let refused = answers.iter().filter(|a| matches!(a, Err(ErrorCode::Conflict))).count();
    assert_eq!((created, refused), (64, 32), "{answers:?}");
    // Each answer is its own change's: the description names it.
    for (i, a) in answers.iter().enumerate() {
        if let Ok(v) = a {
            assert_eq!(v["description"], format!("change {i}"));
        }
    }
    let entries = node.raft.metrics().borrow().last_log_index.unwrap_or(0) - log_before;
    assert!(entries < 32, "96 changes took {entries} log entries");
    // One audit entry per accepted change, each with its own actor, on every node alike.
    let target = c.applied(leader);
    c.wait_applied(&[1, 2, 3], target).await;
    let chain = node.sm.read_audit(chain_before, usize::MAX).unwrap();
    assert_eq!(chain.len(), 64);
    let mut actors: Vec<&str> = chain.iter().map(|e| e.actor.as_str()).collect();
    actors.sort_unstable();
    actors.dedup();
    assert_eq!(actors.len(), 64);
    assert!(chain.windows(2).all(|w| w[0].at <= w[1].at), "times follow the chain");
    for id in [1, 2, 3] {
        assert_eq!(c.nodes[&id].node.sm.read_audit(chain_before, usize::MAX).unwrap(), chain, "node {id}");
        assert_eq!(policy_names(&c, id).iter().filter(|n| n.starts_with("group-")).count(), 64);
    }
    // A lone change has an entry of its own.
    let token = admin_token(&c.url(leader)).await;
    let r = post_json(&c.url(leader), "/api/v1/retention-policies", &token, policy("alone")).await;
    assert_eq!(r.status(), 201);
    let last = node.log.entries().pop().unwrap();
    match last.payload {
        EntryPayload::Normal(req) => assert!(matches!(req.op, Op::CreatePolicy { .. }), "{:?}", req.op),
        other => panic!("{other:?}"),
    }
    for n in c.nodes.values_mut() {
        n.stop().await;
    }
}
