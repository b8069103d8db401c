//! `rankd.v1.Heartbeat/Subscribe`: a node's status as a stream, as failover clients see it.
//! It ticks while the node serves, says "draining" at once on SIGTERM, and ends when the
//! node exits, so an open stream never holds the shutdown up.

use std::time::Duration;

use rankd_proto::v1::heartbeat_client::HeartbeatClient;
use rankd_proto::v1::{HeartbeatRequest, NodeHeartbeat};
use rankd_tests::{init, Node};
use tokio_stream::StreamExt;
use tonic::Streaming;

async fn next(stream: &mut Streaming<NodeHeartbeat>) -> NodeHeartbeat {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a heartbeat within 10 s")
        .expect("the stream is still open")
        .expect("a heartbeat, not an error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ticks_while_serving_says_draining_on_sigterm_and_ends_at_exit() {
    init();
    let mut node = Node::builder().drain_delay_ms(1_000).start().await;
    let mut stream = HeartbeatClient::new(node.channel().await)
        .subscribe(HeartbeatRequest {})
        .await
        .expect("Heartbeat/Subscribe")
        .into_inner();

    let first = next(&mut stream).await;
    assert!(first.serving, "{first:?}");
    assert!(first.reason.is_empty(), "{first:?}");
    assert_eq!(first.node_id, node.id());
    assert_eq!(
        (first.interval_ms, first.missed_limit),
        (100, 3),
        "{first:?}"
    );
    let fence = first.fence.clone().expect("a fence");
    assert!(!fence.model_version.is_empty(), "{first:?}");
    assert_eq!(first.members, vec![node.grpc_addr().to_string()]);

    tracing::info!("--- it keeps ticking");
    for _ in 0..3 {
        let hb = next(&mut stream).await;
        assert!(hb.serving, "{hb:?}");
        assert_eq!(hb.fence.as_ref(), Some(&fence));
    }

    tracing::info!("--- SIGTERM: the next heartbeat says draining");
    node.sigterm();
    let hb = loop {
        let hb = next(&mut stream).await;
        if !hb.serving {
            break hb;
        }
    };
    assert_eq!(hb.reason, "draining", "{hb:?}");

    tracing::info!("--- the node exits 0 and the stream ends");
    let status = node.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(hb)) = stream.next().await {
            assert!(!hb.serving, "serving again after SIGTERM: {hb:?}");
        }
    })
    .await;
    assert!(end.is_ok(), "the stream did not end when the node exited");
}
