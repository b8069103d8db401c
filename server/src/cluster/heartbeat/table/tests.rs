use super::*;

fn table() -> PeerTable {
    PeerTable::new(1, Duration::from_millis(100), 3, Arc::new(Metrics::new()))
}

fn hb(id: NodeId, ready: bool, queue_depth: u32) -> PeerHeartbeat {
    PeerHeartbeat {
        node_id: id,
        ready,
        queue_depth,
        queue_capacity: 10,
        api_addr: format!("127.0.0.{id}:50051"),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_goes_down_only_after_the_miss_limit() {
    let t = table();
    t.set_members([1, 2, 3]);
    assert!(t.up_ids().is_empty(), "never-heard peers start down");
    assert!(t.heard(hb(2, true, 0), Instant::now()));
    assert!(!t.heard(hb(2, true, 0), Instant::now()), "already up");
    assert_eq!(t.up_ids(), vec![2]);

    tokio::time::advance(Duration::from_millis(300)).await;
    assert!(
        t.sweep(Instant::now()).is_empty(),
        "exactly at the limit is still up"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(t.sweep(Instant::now()), vec![2]);
    assert!(t.sweep(Instant::now()).is_empty(), "marked down once");
    assert!(t.up_ids().is_empty());
    let failovers = t.metrics.peers.failovers.get_or_create(&label(2)).get();
    assert_eq!(failovers, 1);

    assert!(
        t.heard(hb(2, true, 0), Instant::now()),
        "heartbeats resume: up again"
    );
}

#[tokio::test(start_paused = true)]
async fn non_members_and_self_are_ignored() {
    let t = table();
    t.set_members([1, 2]);
    assert!(!t.heard(hb(7, true, 0), Instant::now()));
    assert!(!t.heard(hb(1, true, 0), Instant::now()));
    assert!(t.up_ids().is_empty());

    t.heard(hb(2, true, 0), Instant::now());
    t.set_members([1]);
    assert!(t.up_ids().is_empty(), "a removed member is dropped");
    assert_eq!(t.pick(), None);
}

#[tokio::test(start_paused = true)]
async fn pick_prefers_the_least_loaded_ready_peer() {
    let t = table();
    t.set_members([2, 3, 4, 5]);
    t.heard(hb(2, true, 5), Instant::now());
    t.heard(hb(3, true, 1), Instant::now());
    t.heard(hb(4, false, 0), Instant::now()); // not ready
    t.heard(
        PeerHeartbeat {
            draining: true,
            ..hb(5, true, 0)
        },
        Instant::now(),
    );
    assert_eq!(t.pick().map(|p| p.id), Some(3));

    // A full queue is no target.
    t.heard(hb(3, true, 10), Instant::now());
    assert_eq!(t.pick().map(|p| p.id), Some(2));

    // A peer that went down is no target, however idle it said it was.
    t.heard(hb(3, true, 0), Instant::now());
    tokio::time::advance(Duration::from_millis(200)).await;
    t.heard(hb(2, true, 5), Instant::now());
    tokio::time::advance(Duration::from_millis(150)).await;
    assert_eq!(t.sweep(Instant::now()), vec![3, 4, 5]);
    assert_eq!(t.pick().map(|p| p.id), Some(2));
}

#[tokio::test(start_paused = true)]
async fn equally_loaded_peers_share_forwards() {
    let t = table();
    t.set_members([2, 3]);
    t.heard(hb(2, true, 0), Instant::now());
    t.heard(hb(3, true, 0), Instant::now());
    let picks: Vec<NodeId> = (0..4).filter_map(|_| t.pick().map(|p| p.id)).collect();
    assert!(picks.contains(&2) && picks.contains(&3), "{picks:?}");
}

#[tokio::test(start_paused = true)]
async fn metrics_follow_the_table() {
    let t = table();
    t.set_members([2, 3]);
    t.heard(hb(2, true, 0), Instant::now());
    tokio::time::advance(Duration::from_millis(120)).await;
    t.sweep(Instant::now());
    let text = t.metrics.encode();
    assert!(text.contains("rankd_peers_up 1"), "{text}");
    assert!(text.contains("rankd_peer_up{peer=\"3\"} 0"), "{text}");
    assert!(
        text.contains("rankd_peer_heartbeat_age_seconds{peer=\"2\"} 0.12"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn degraded_peers_are_no_forwarding_target_and_are_counted() {
    let t = table();
    t.set_members([2, 3]);
    t.heard(hb(2, true, 0), Instant::now());
    t.heard(hb(3, true, 5), Instant::now());
    t.set_degraded(BTreeMap::from([(2, "p99 120 ms".to_string())]));
    assert!(t.is_degraded(2));
    assert_eq!(
        t.pick().map(|p| p.id),
        Some(3),
        "the idle but degraded peer is skipped"
    );
    t.set_degraded(BTreeMap::from([(2, "p99 120 ms".to_string())]));
    let d = &t.metrics.peers;
    assert_eq!(
        d.degradations.get_or_create(&label(2)).get(),
        1,
        "counted once"
    );
    assert_eq!(d.degraded.get_or_create(&label(2)).get(), 1);
    t.set_degraded(BTreeMap::new());
    assert_eq!(d.degraded.get_or_create(&label(2)).get(), 0);
    assert_eq!(t.pick().map(|p| p.id), Some(2));
}
