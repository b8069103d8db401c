//! Where the client finds rankd nodes: a fixed address list or a DNS name that is resolved
//! again periodically. Addresses are normalised to `host:port`, the key a node is known by.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::error::ClientError;
use super::pool::{NodeKey, Pool};
use super::stats::NodeOrigin;

/// The nodes a [`FailoverClient`](super::FailoverClient) starts from.
///
/// With [`ClientConfig::discover_members`](super::ClientConfig::discover_members) (the
/// default) the rest of the cluster is learned from heartbeats, so one reachable address is
/// enough.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Fixed addresses, each `host:port` or `http://host:port`.
    Static(Vec<String>),
    /// A `host:port` name resolved now and then again every `every`: addresses that appear
    /// become nodes, addresses that disappear are dropped. A failed re-resolution keeps the
    /// current set.
    Dns { name: String, every: Duration },
}

impl Targets {
    /// A DNS name (`host:port`), re-resolved every `every`.
    pub fn dns(name: impl Into<String>, every: Duration) -> Self {
        Targets::Dns {
            name: name.into(),
            every,
        }
    }
}

impl From<Vec<String>> for Targets {
    fn from(addresses: Vec<String>) -> Self {
        Targets::Static(addresses)
    }
}

impl From<&[&str]> for Targets {
    fn from(addresses: &[&str]) -> Self {
        Targets::Static(addresses.iter().map(|a| (*a).to_owned()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Targets {
    fn from(addresses: [&str; N]) -> Self {
        Targets::Static(addresses.iter().map(|a| (*a).to_owned()).collect())
    }
}

impl From<&str> for Targets {
    fn from(address: &str) -> Self {
        Targets::Static(vec![address.to_owned()])
    }
}

impl From<String> for Targets {
    fn from(address: String) -> Self {
        Targets::Static(vec![address])
    }
}

/// Normalises `host:port` or `http://host:port` to `host:port`. Anything else (a path, a
/// missing port, https, which this client does not configure) is an error rather than a
/// node that can never connect.
pub(crate) fn parse_address(address: &str) -> Result<NodeKey, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = address.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// (plaintext gRPC) is supported"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(invalid("must not have a path"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.host().is_empty() {
        return Err(invalid("no host"));
    }
    if authority.port_u16().is_none() {
        return Err(invalid("no port"));
    }
    Ok(Arc::from(authority.as_str()))
}

/// Resolves `name` (`host:port`) to the set of node keys (`ip:port`) it names now.
pub(crate) async fn resolve(name: &str) -> Result<BTreeSet<NodeKey>, ClientError> {
    let addrs = tokio::net::lookup_host(name)
        .await
        .map_err(|source| ClientError::Resolve {
            name: name.to_owned(),
            source,
        })?;
    Ok(addrs.map(|a| NodeKey::from(a.to_string())).collect())
}

/// Re-resolves `name` every `every` and makes the pool's DNS nodes match. Runs until the
/// client is dropped (which aborts it).
pub(crate) async fn refresh_dns(pool: Arc<Pool>, name: String, every: Duration) {
    loop {
        // connect() resolved already, so the first refresh is one period in.
        tokio::time::sleep(every).await;
        match resolve(&name).await {
            Ok(keys) if !keys.is_empty() => pool.sync_origin(NodeOrigin::Dns, &keys),
            Ok(_) => tracing::warn!(%name, "DNS name resolves to no address; keeping the nodes"),
            Err(error) => tracing::warn!(%error, "DNS refresh failed; keeping the nodes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        for (given, key) in [
            ("127.0.0.1:50051", "127.0.0.1:50051"),
            ("http://127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("  rankd-1.internal:7000 ", "rankd-1.internal:7000"),
            ("http://[::1]:50051/", "[::1]:50051"),
        ] {
            let parsed = parse_address(given).map(|k| k.to_string());
            let expected = key.trim_start_matches("http://");
            assert_eq!(parsed.ok().as_deref(), Some(expected), "{given}");
        }
    }

    #[test]
    fn bad_addresses_are_rejected() {
        for bad in [
            "",
            "localhost",
            "https://127.0.0.1:50051",
            "http://127.0.0.1:50051/rankd",
            "127.0.0.1:port",
        ] {
            assert!(
                matches!(parse_address(bad), Err(ClientError::InvalidAddress { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn targets_convert_from_lists() {
        let expected = Targets::Static(vec!["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(Targets::from(["a:1", "b:2"]), expected);
        assert_eq!(Targets::from(&["a:1", "b:2"][..]), expected);
        assert_eq!(
            Targets::from(vec!["a:1".to_owned(), "b:2".to_owned()]),
            expected
        );
        assert_eq!(
            Targets::dns("rankd:50051", Duration::from_secs(5)),
            Targets::Dns {
                name: "rankd:50051".into(),
                every: Duration::from_secs(5)
            }
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let keys = resolve("localhost:50051").await;
        let keys = keys.map(|k| k.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        let keys = keys.unwrap_or_default();
        assert!(
            keys.iter()
                .any(|k| k == "127.0.0.1:50051" || k == "[::1]:50051"),
            "{keys:?}"
        );
    }
}
