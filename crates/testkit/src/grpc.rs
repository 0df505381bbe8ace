//! A gRPC test service (`test.Echo`) and client, built with tonic and hand-written prost
//! messages (no protoc needed). Methods: `Unary` echoes; `Stream` sends `count` replies;
//! either fails with `fail_code` when it is set.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::codegen::Service;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

/// Request message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Text to echo.
    #[prost(string, tag = "1")]
    pub message: String,
    /// Replies to stream.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// When not 0, fail with this gRPC code.
    #[prost(uint32, tag = "3")]
    pub fail_code: u32,
}

/// Reply message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The echoed text.
    #[prost(string, tag = "1")]
    pub message: String,
    /// Position in a stream.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    /// The `:authority` the server saw.
    #[prost(string, tag = "3")]
    pub authority: String,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type ReplyStream = futures_util::stream::Iter<std::vec::IntoIter<Result<EchoReply, Status>>>;

#[derive(Clone)]
struct Unary(String);
#[derive(Clone)]
struct Streaming(String);

impl Service<Request<EchoRequest>> for Unary {
    type Response = Response<EchoReply>;
    type Error = Status;
    type Future = BoxFut<EchoReply>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let authority = self.0.clone();
        Box::pin(async move {
            let r = req.into_inner();
            if r.fail_code != 0 {
                return Err(Status::new(
                    Code::from_i32(r.fail_code as i32),
                    format!("failed on purpose: {}", r.message),
                ));
            }
            let mut resp = Response::new(EchoReply {
                message: r.message,
                index: 0,
                authority,
            });
            resp.metadata_mut()
                .insert("x-echo-server", "portico-testkit".parse().expect("ascii"));
            Ok(resp)
        })
    }
}

impl Service<Request<EchoRequest>> for Streaming {
    type Response = Response<ReplyStream>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ReplyStream>, Status>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let authority = self.0.clone();
        Box::pin(async move {
            let r = req.into_inner();
            let mut items: Vec<Result<EchoReply, Status>> = (0..r.count)
                .map(|i| {
                    Ok(EchoReply {
                        message: format!("{} #{i}", r.message),
                        index: i,
                        authority: authority.clone(),
                    })
                })
                .collect();
            if r.fail_code != 0 {
                items.push(Err(Status::new(
                    Code::from_i32(r.fail_code as i32),
                    "stream failed on purpose",
                )));
            }
            Ok(Response::new(futures_util::stream::iter(items)))
        })
    }
}

/// A running gRPC server (h2c).
pub struct GrpcServer {
    /// Its address.
    pub addr: SocketAddr,
    /// The headers (metadata) of every request it got, in order.
    seen: std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    /// Starts the `test.Echo` service on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        record
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(req.headers().clone());
                        async move {
                            let authority = req
                                .uri()
                                .authority()
                                .map(|a| a.to_string())
                                .unwrap_or_default();
                            let mut grpc =
                                tonic::server::Grpc::new(
                                    ProstCodec::<EchoReply, EchoRequest>::default(),
                                );
                            let resp = match req.uri().path() {
                                "/test.Echo/Unary" => grpc.unary(Unary(authority), req).await,
                                "/test.Echo/Stream" => {
                                    grpc.server_streaming(Streaming(authority), req).await
                                }
                                _ => Status::unimplemented("no such method").into_http(),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// The headers of the last request it got.
    pub fn last_headers(&self) -> Option<http::HeaderMap> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .cloned()
    }
}

/// A gRPC client for `test.Echo` over h2c.
pub struct GrpcClient {
    inner: tonic::client::Grpc<tonic::transport::Channel>,
}

impl GrpcClient {
    /// Connects to `http://addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_authority(addr, None).await
    }

    /// Connects to `addr`, sending `authority` as `:authority` when given.
    pub async fn connect_authority(addr: SocketAddr, authority: Option<&str>) -> Self {
        let mut ep =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        if let Some(a) = authority {
            ep = ep.origin(format!("http://{a}").parse().expect("origin"));
        }
        let channel = ep.connect().await.expect("connect grpc");
        Self {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// Calls `test.Echo/Unary`.
    pub async fn unary(
        &mut self,
        message: &str,
        fail_code: u32,
    ) -> Result<Response<EchoReply>, Status> {
        self.send_unary(message, fail_code, &[]).await
    }

    /// Calls `test.Echo/Unary` with metadata (ASCII `name: value` pairs).
    pub async fn unary_with(
        &mut self,
        message: &str,
        metadata: &[(&'static str, &str)],
    ) -> Result<Response<EchoReply>, Status> {
        self.send_unary(message, 0, metadata).await
    }

    async fn send_unary(
        &mut self,
        message: &str,
        fail_code: u32,
        metadata: &[(&'static str, &str)],
    ) -> Result<Response<EchoReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut req = Request::new(EchoRequest {
            message: message.into(),
            count: 0,
            fail_code,
        });
        for (k, v) in metadata {
            let v = v
                .parse()
                .map_err(|_| Status::invalid_argument(format!("bad metadata value for {k}")))?;
            req.metadata_mut().insert(*k, v);
        }
        self.inner
            .unary(
                req,
                PathAndQuery::from_static("/test.Echo/Unary"),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
    }

    /// Calls a method by path (for unknown methods and the like).
    pub async fn call(&mut self, path: &'static str) -> Result<Response<EchoReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = Request::new(EchoRequest {
            message: "x".into(),
            count: 0,
            fail_code: 0,
        });
        self.inner
            .unary(
                req,
                PathAndQuery::from_static(path),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
    }

    /// Calls `test.Echo/Stream` and collects every reply, then the final status.
    pub async fn stream(
        &mut self,
        message: &str,
        count: u32,
        fail_code: u32,
    ) -> (Vec<EchoReply>, Result<(), Status>) {
        if let Err(e) = self.inner.ready().await {
            return (vec![], Err(Status::unavailable(e.to_string())));
        }
        let req = Request::new(EchoRequest {
            message: message.into(),
            count,
            fail_code,
        });
        let resp = self
            .inner
            .server_streaming(
                req,
                PathAndQuery::from_static("/test.Echo/Stream"),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await;
        let mut stream = match resp {
            Ok(r) => r.into_inner(),
            Err(s) => return (vec![], Err(s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return (out, Ok(())),
                Err(s) => return (out, Err(s)),
            }
        }
    }
}
