//! A minimal HTTP/1.1 GET over raw TCP (no HTTP client dependency) and a parser for the
//! Prometheus text exposition.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP response: status code, headers (lower-cased names), body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` with `Connection: close`; reads until the server closes.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET http://{addr}{path} timed out"))?
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..split])?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body)?,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("truncated chunk size line"))?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A series key: metric name plus its labels (order-insensitive).
type SeriesKey = (String, BTreeMap<String, String>);

/// One scrape of `/metrics`, parsed.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub text: String,
    series: Vec<(SeriesKey, f64)>,
}

impl MetricsSnapshot {
    pub fn parse(text: &str) -> MetricsSnapshot {
        let series = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (key, rest) = parse_series(l)?;
                let value = rest.split_whitespace().next()?;
                Some((key, parse_value(value)?))
            })
            .collect();
        MetricsSnapshot {
            text: text.to_string(),
            series,
        }
    }

    /// The value of one series, written as exposed, e.g.
    /// `rankd_requests_total{method="/rankd.v1.Ranker/Rank",code="OK"}`. Label order does not
    /// matter, but the label set must match exactly.
    pub fn value(&self, series: &str) -> Option<f64> {
        let (want, _) = parse_series(series)
            .unwrap_or_else(|| panic!("{series:?} is not a series name with optional labels"));
        self.series
            .iter()
            .find(|(k, _)| *k == want)
            .map(|(_, v)| *v)
    }

    /// Like [`value`](Self::value), but an absent series reads as 0 (counters in a labelled
    /// family appear only once incremented).
    pub fn value_or_zero(&self, series: &str) -> f64 {
        self.value(series).unwrap_or(0.0)
    }

    /// Whether any series of metric `name` is present (any labels).
    pub fn has(&self, name: &str) -> bool {
        self.series.iter().any(|((n, _), _)| n == name)
    }

    /// Every series of metric `name`: its labels and value.
    pub fn all(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.series
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, labels), v)| (labels.clone(), *v))
            .collect()
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

/// Parses `name{a="x",b="y"}` (labels optional) from the start of `s`; returns the key and
/// the rest of the line.
fn parse_series(s: &str) -> Option<(SeriesKey, &str)> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(s.len());
    let name = s[..name_end].to_string();
    if name.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &s[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // Skip separators, stop at the closing brace.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=')? + start;
            let key = body[start..eq].trim().to_string();
            while chars.peek().is_some_and(|&(i, _)| i <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
    }
    Some(((name, labels), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_with_and_without_labels() {
        let text = "# HELP x y\n\
            rankd_ready 1\n\
            rankd_requests_total{method=\"/rankd.v1.Ranker/Rank\",code=\"OK\"} 3\n\
            rankd_batch_size_bucket{le=\"+Inf\"} 7\n\
            rankd_model_load_seconds 1.25\n\
            odd{v=\"a\\\"b,c\"} 2\n\
            # EOF\n";
        let m = MetricsSnapshot::parse(text);
        assert_eq!(m.value("rankd_ready"), Some(1.0));
        assert_eq!(
            m.value("rankd_requests_total{code=\"OK\",method=\"/rankd.v1.Ranker/Rank\"}"),
            Some(3.0)
        );
        assert_eq!(m.value("rankd_requests_total{code=\"OK\"}"), None);
        assert_eq!(m.value("rankd_batch_size_bucket{le=\"+Inf\"}"), Some(7.0));
        assert_eq!(m.value("rankd_model_load_seconds"), Some(1.25));
        assert_eq!(m.value("odd{v=\"a\\\"b,c\"}"), Some(2.0));
        assert!(m.has("rankd_requests_total"));
        assert!(!m.has("rankd_nope"));
    }

    #[test]
    fn parses_http_responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.body, "abcde");
        assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    }
}
