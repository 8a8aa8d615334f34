//! Arbitrary WebSocket messages sent to a listener running the real handshake (`accept`):
//! it completes, refuses or times out, never panics. Input: messages separated by 0xFF 0x00.
#![no_main]
use futures_util::SinkExt;
use gossip_roster::message::Role;
use gossip_roster::transport::{accept, TransportConfig};
use gossip_roster::NodeId;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = TransportConfig {
            handshake_timeout: Duration::from_millis(200),
            ..TransportConfig::default()
        };
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let me = Role::Member {
                id: NodeId::new("fuzz"),
                generation: 1,
                addr: "ws://x:1".into(),
            };
            let _ = accept(stream, &me, &cfg).await;
        });
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await {
            for msg in data.split(|b| *b == 0xff) {
                if ws.send(Message::Binary(msg.to_vec())).await.is_err() {
                    break;
                }
            }
        }
        let _ = server.await;
    });
});
