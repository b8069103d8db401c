//! Server reflection (grpc.reflection.v1 and v1alpha), so grpcurl and friends work without
//! the .proto files.

use std::time::Duration;

use prost::Message;
use rankd_tests::{init, Node};
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED_SERVICES: [&str; 3] = [
    "rankd.v1.Ranker",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

/// One request on the bidirectional reflection stream (v1), one response back.
async fn ask_v1(
    node: &Node,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    try_ask_v1(node, request)
        .await
        .expect("a reflection response")
}

/// Like [`ask_v1`], but a failed stream is returned rather than a panic.
async fn try_ask_v1(
    node: &Node,
    request: v1::server_reflection_request::MessageRequest,
) -> Result<v1::server_reflection_response::MessageResponse, tonic::Status> {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(node.channel().await);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("opening the v1 reflection stream")
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a reflection response in time")?
        .expect("the stream has a response");
    Ok(response.message_response.expect("the response has a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_services_and_resolves_symbols() {
    init();
    let node = Node::start().await;

    tracing::info!("--- v1 ListServices");
    let listed = match ask_v1(
        &node,
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await
    {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(l) => l,
        other => panic!("expected a service list, got {other:?}"),
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    for want in EXPECTED_SERVICES {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }

    tracing::info!("--- v1 FileContainingSymbol rankd.v1.Ranker");
    let files = match ask_v1(
        &node,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "rankd.v1.Ranker".into(),
        ),
    )
    .await
    {
        v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => f,
        other => panic!("expected file descriptors, got {other:?}"),
    };
    let descriptors: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .expect("a FileDescriptorProto")
        })
        .collect();
    let ranker = descriptors
        .iter()
        .filter(|f| f.package() == "rankd.v1")
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "Ranker")
        .unwrap_or_else(|| {
            panic!(
                "no rankd.v1.Ranker among {:?}",
                descriptors.iter().map(|f| f.name()).collect::<Vec<_>>()
            )
        });
    assert!(
        ranker.method.iter().any(|m| m.name() == "Rank"),
        "Ranker has a Rank method"
    );

    tracing::info!("--- v1 unknown symbol is NOT_FOUND");
    // The reflection spec answers with an ErrorResponse message; tonic-reflection ends the
    // stream with the status instead. Either way the code must be NOT_FOUND.
    match try_ask_v1(
        &node,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol("no.such.Thing".into()),
    )
    .await
    {
        Ok(v1::server_reflection_response::MessageResponse::ErrorResponse(e)) => {
            assert_eq!(e.error_code, tonic::Code::NotFound as i32, "{e:?}");
        }
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
        Ok(other) => panic!("expected NOT_FOUND, got {other:?}"),
    }

    tracing::info!("--- v1alpha ListServices (older grpcurl and tooling)");
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(node.channel().await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let resp = alpha
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("opening the v1alpha reflection stream")
        .into_inner()
        .message()
        .await
        .expect("a v1alpha response")
        .expect("the stream has a response");
    match resp.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            let names: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&"rankd.v1.Ranker"), "{names:?}");
        }
        other => panic!("expected a v1alpha service list, got {other:?}"),
    }
}
