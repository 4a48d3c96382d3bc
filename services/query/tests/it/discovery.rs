use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::support::Harness;

async fn channel(address: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn reflect(address: std::net::SocketAddr, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel(address).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let ServerReflectionResponse {
        message_response, ..
    } = responses.message().await.unwrap().unwrap();
    message_response.unwrap()
}

/// What `grpcurl -plaintext HOST:PORT list` and `describe` ask: services and their descriptors,
/// without credentials or proto files; and the health check says the API is serving.
#[tokio::test]
async fn reflection_and_health_work_without_proto_files() {
    let harness = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let running = harness.start(dir.path()).await;

    let MessageResponse::ListServicesResponse(list) =
        reflect(running.address, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"receipts.v1.DeliveryQuery"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let MessageResponse::FileDescriptorResponse(files) = reflect(
        running.address,
        MessageRequest::FileContainingSymbol("receipts.v1.DeliveryQuery".into()),
    )
    .await
    else {
        panic!("expected descriptors")
    };
    let described = files.file_descriptor_proto.iter().any(|bytes| {
        let file =
            <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice()).unwrap();
        file.service.iter().any(|s| {
            s.name() == "DeliveryQuery" && s.method.iter().any(|m| m.name() == "WatchUpdates")
        })
    });
    assert!(described, "DeliveryQuery is described with its methods");

    // Serving once the read model and the configuration reader are current (they start at
    // once here: the topics exist and are empty).
    let mut health = HealthClient::new(channel(running.address).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "receipts.v1.DeliveryQuery".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.status() == ServingStatus::Serving {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?} after 30 s",
            status.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    running.stop().await;
}
