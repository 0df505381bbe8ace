//! A WebSocket echo server and client helpers (tokio-tungstenite).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A running WebSocket echo server: every text or binary message comes back as it was.
pub struct WsEcho {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsEcho {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                        if matches!(msg, Message::Close(_)) || (echo && ws.send(msg).await.is_err())
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

/// Connects to `url` (e.g. `ws://127.0.0.1:8080/chat`), sends each message and returns the echoes.
pub async fn round_trip(url: &str, messages: &[&str]) -> Result<Vec<String>, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for m in messages {
        ws.send(Message::text(m.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) => out.push(t.to_string()),
            other => return Err(format!("unexpected: {other:?}")),
        }
    }
    let _ = ws.close(None).await;
    Ok(out)
}
