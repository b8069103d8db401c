//! [`Node`]: one running `rankd serve` process and typed access to everything it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::v1::ranker_client::RankerClient;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::builder::NodeBuilder;
use crate::metrics::{http_get, HttpResponse, MetricsSnapshot};
use crate::STARTUP_TIMEOUT;

/// A running rankd node. Dropping it kills the process (SIGKILL) and reaps it; if the test
/// is failing, the tail of the node's log is printed first.
pub struct Node {
    id: String,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    peer_addr: Option<SocketAddr>,
    listeners: Vec<(String, SocketAddr)>,
    child: Child,
    pid: Pid,
    exited: Option<ExitStatus>,
    stderr_path: PathBuf,
    config_path: PathBuf,
    client_tls: Option<ClientTlsConfig>,
    // Last: the directory must outlive the process writing into it.
    dir: TempDir,
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }

    /// A node with the default test settings.
    pub async fn start() -> Node {
        NodeBuilder::new().start().await
    }

    pub(crate) async fn spawn(
        mut cmd: Command,
        dir: TempDir,
        config_path: PathBuf,
        stderr_path: PathBuf,
        client_tls: Option<ClientTlsConfig>,
    ) -> Node {
        let mut child = cmd.spawn().expect("spawning rankd");
        let pid = Pid::from_raw(child.id().expect("a running child has a pid") as i32);
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        let line = match tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                panic!(
                    "rankd exited before serving ({status:?})\n--- config:\n{}\n--- stderr:\n{}",
                    read_lossy(&config_path),
                    read_lossy(&stderr_path)
                );
            }
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "rankd did not report serving within {STARTUP_TIMEOUT:?}\n--- stderr:\n{}",
                    read_lossy(&stderr_path)
                );
            }
        };
        let ServingLine {
            grpc: grpc_addr,
            metrics: metrics_addr,
            peer: peer_addr,
            node: id,
            others: listeners,
        } = parse_serving_line(&line)
            .unwrap_or_else(|| panic!("unexpected first stdout line from rankd: {line:?}"));
        tracing::info!(node = %id, %grpc_addr, %metrics_addr, peer_addr = ?peer_addr, startup_ms = started.elapsed().as_millis() as u64, "rankd serving");
        // rankd prints nothing else on stdout, but keep the pipe drained so it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            id,
            grpc_addr,
            metrics_addr,
            peer_addr,
            listeners,
            child,
            pid,
            exited: None,
            stderr_path,
            config_path,
            client_tls,
            dir,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The bound peer port (Raft, artifact replication), when rankd reports one (`peer=` in
    /// its serving line).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// An optional listener from the serving line: `"admin"` or `"health"`.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The node's temporary directory (config file, stderr log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// `http://host:port` of the gRPC listener (`https://` when it speaks TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.grpc_addr)
    }

    /// The node's client port as an endpoint, with the harness's TLS settings when the
    /// port speaks TLS.
    pub fn endpoint_config(&self) -> Endpoint {
        let endpoint = Endpoint::from_shared(self.endpoint()).expect("a valid endpoint URI");
        match &self.client_tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .expect("client TLS settings"),
            None => endpoint,
        }
    }

    /// A fresh gRPC channel to the node (its own HTTP/2 connection), over TLS when the
    /// node's client port speaks it.
    pub async fn channel(&self) -> Channel {
        self.endpoint_config()
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.endpoint()))
    }

    /// An Admin (model store) client on a fresh connection.
    pub async fn admin_client(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// A Rank client on a fresh connection.
    pub async fn rank_client(&self) -> RankerClient<Channel> {
        RankerClient::new(self.channel().await)
    }

    /// A Rank client whose transport does not enforce `grpc-timeout` itself, so the server's
    /// own deadline handling is what a test observes (see [`crate::RawH2`]).
    pub async fn raw_rank_client(&self) -> RankerClient<crate::RawH2> {
        crate::raw_rank_client(self.grpc_addr).await
    }

    /// A grpc.health.v1 client on a fresh connection.
    pub async fn health_client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    /// `Health/Check` for `service` ("" is the whole server).
    pub async fn health_check(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let resp = self
            .health_client()
            .await
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await?;
        Ok(resp.into_inner().status())
    }

    /// `Health/Check` for `service`, which must succeed.
    pub async fn health(&self, service: &str) -> ServingStatus {
        self.health_check(service)
            .await
            .unwrap_or_else(|s| panic!("Health/Check({service:?}) failed: {s:?}"))
    }

    /// `GET path` on the metrics listener.
    pub async fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.metrics_addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET http://{}{path}: {e}", self.metrics_addr))
    }

    /// The raw Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let resp = self.http_get("/metrics").await;
        assert_eq!(resp.status, 200, "GET /metrics: {resp:?}");
        resp.body
    }

    /// One parsed scrape of `/metrics`.
    pub async fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot::parse(&self.metrics_text().await)
    }

    /// The current value of one series, e.g. `rankd_ready` or
    /// `rankd_rejected_total{reason="deadline_on_arrival"}`.
    pub async fn metric_value(&self, series: &str) -> Option<f64> {
        self.metrics().await.value(series)
    }

    /// Sends SIGTERM (graceful drain and shutdown).
    pub fn sigterm(&self) {
        kill(self.pid, Signal::SIGTERM).expect("sending SIGTERM to rankd");
    }

    /// SIGSTOP: the process hangs with every socket open, answering nothing.
    pub fn sigstop(&self) {
        kill(self.pid, Signal::SIGSTOP).expect("sending SIGSTOP to rankd");
    }

    /// SIGCONT: a stopped process resumes where it was.
    pub fn sigcont(&self) {
        kill(self.pid, Signal::SIGCONT).expect("sending SIGCONT to rankd");
    }

    /// `kill -9`: no drain, no flush, nothing the node can react to. Returns once the process
    /// is gone (a no-op if it already exited).
    pub async fn sigkill(&mut self) {
        if self.has_exited() {
            return;
        }
        kill(self.pid, Signal::SIGKILL).expect("sending SIGKILL to rankd");
        self.wait_exit(Duration::from_secs(30)).await;
    }

    /// Waits for the process to exit; panics (with the log) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("waiting for rankd");
                self.exited = Some(status);
                status
            }
            Err(_) => panic!(
                "rankd {} did not exit within {timeout:?}\n--- stderr:\n{}",
                self.id,
                self.log()
            ),
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("polling rankd");
        }
        self.exited.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of rankd {} log ({}):\n{}",
                self.id,
                self.stderr_path.display(),
                tail.join("\n")
            );
        }
        if self.exited.is_none() {
            let _ = self.child.start_kill();
            // Reap it here rather than leaving a zombie for the runtime: SIGKILL is
            // immediate, so this only waits for the kernel to tear the process down.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        if !std::thread::panicking() {
            let secrets = crate::secrets::from_config(&self.config_path);
            crate::secrets::assert_absent(&format!("rankd {} log", self.id), &self.log(), &secrets);
        }
    }
}

/// What the serving line reports.
#[derive(Debug, Clone, PartialEq)]
struct ServingLine {
    grpc: SocketAddr,
    metrics: SocketAddr,
    peer: Option<SocketAddr>,
    node: String,
    /// Optional listeners: `admin=`, `health=`.
    others: Vec<(String, SocketAddr)>,
}

/// `rankd: serving grpc=ADDR metrics=ADDR [peer=ADDR] node=ID`. Tolerant: fields may come in
/// any order, unknown fields (and words without `=`) are ignored; grpc, metrics and node
/// are required.
fn parse_serving_line(line: &str) -> Option<ServingLine> {
    let rest = line.strip_prefix("rankd: serving ")?;
    let mut grpc = None;
    let mut metrics = None;
    let mut peer = None;
    let mut node = None;
    let mut others = Vec::new();
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("grpc", v)) => grpc = v.parse().ok(),
            Some(("metrics", v)) => metrics = v.parse().ok(),
            Some(("peer", v)) => peer = v.parse().ok(),
            Some(("node", v)) => node = Some(v.to_string()),
            Some((name, v)) => {
                if let Ok(addr) = v.parse() {
                    others.push((name.to_string(), addr));
                }
            }
            None => {}
        }
    }
    Some(ServingLine {
        grpc: grpc?,
        metrics: metrics?,
        peer,
        node: node?,
        others,
    })
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_serving_line;

    #[test]
    fn parses_the_serving_line() {
        let l = parse_serving_line(
            "rankd: serving grpc=127.0.0.1:5001 metrics=127.0.0.1:5002 node=n-1",
        )
        .unwrap();
        assert_eq!(l.grpc.port(), 5001);
        assert_eq!(l.metrics.port(), 5002);
        assert_eq!(l.peer, None);
        assert_eq!(l.node, "n-1");
        assert!(parse_serving_line("rankd: starting").is_none());
    }

    #[test]
    fn parses_the_peer_address_in_any_order_and_ignores_the_rest() {
        let l = parse_serving_line(
            "rankd: serving peer=127.0.0.11:6001 grpc=127.0.0.1:5001 metrics=127.0.0.1:5002 \
             raft_id=1 node=n-1 (cluster)",
        )
        .unwrap();
        assert_eq!(l.peer, Some("127.0.0.11:6001".parse().unwrap()));
        assert_eq!(l.grpc.port(), 5001);
        assert_eq!(l.node, "n-1");
    }
}
