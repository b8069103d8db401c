//! The tower layers that put [`Principal`]s on admin calls.
//!
//! [`AdminAuth`] guards the admin surface where operators reach it (the client port, or
//! `server.admin_listen`): it authenticates and authorizes every call before the handler
//! runs, so a refused call changes nothing. [`ForwardedAuth`] guards the copy of the admin
//! service on the peer port, which only other nodes reach (mutual TLS with the cluster CA):
//! they forward writes to the leader and name the principal they already authorized.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use tonic::body::Body;
use tonic::Status;

use super::{required_role, Authenticator, Principal, Role};
use crate::audit::Auditor;
use crate::metrics::{DeniedLabels, Metrics};
use crate::stack::guard::Check;
use crate::tls::ConnInfo;

/// Metadata a forwarding node sets: the principal it authorized, and that one's role.
pub const PRINCIPAL_HEADER: &str = "rankd-principal";
pub const PRINCIPAL_ROLE_HEADER: &str = "rankd-principal-role";

fn method_of<B>(req: &Request<B>) -> String {
    req.uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Authenticates and authorizes every call on the admin surface operators reach.
#[derive(Clone)]
pub struct AdminAuth {
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub auditor: Auditor,
    /// When each (principal, method) denial last reached the audit history: at most one
    /// per [`DENIED_AUDIT_EVERY`], so a low-role credential cannot flush the bounded
    /// history with refusals. Bounded by the configured credentials times the methods.
    pub denied_recorded: Arc<Mutex<HashMap<(String, &'static str), Instant>>>,
}

/// How often one caller's repeated refusals of one method are recorded in the history.
/// Every refusal is still logged and counted.
pub const DENIED_AUDIT_EVERY: Duration = Duration::from_secs(60);

impl AdminAuth {
    pub fn new(auth: Arc<Authenticator>, metrics: Arc<Metrics>, auditor: Auditor) -> AdminAuth {
        AdminAuth {
            auth,
            metrics,
            auditor,
            denied_recorded: Arc::default(),
        }
    }

    /// Whether this denial should go to the history (the first in its window).
    fn record_denial(&self, who: &str, method: &'static str) -> bool {
        let now = Instant::now();
        let mut seen = self
            .denied_recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match seen.get(&(who.to_owned(), method)) {
            Some(t) if now.duration_since(*t) < DENIED_AUDIT_EVERY => false,
            _ => {
                seen.insert((who.to_owned(), method), now);
                true
            }
        }
    }
}

impl Check for AdminAuth {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Status> {
        let method = method_of(req);
        let conn = req.extensions().get::<ConnInfo>().cloned();
        match self.auth.authorize(&method, req.headers(), conn.as_ref()) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                Ok(())
            }
            Err(status) => {
                let (name, _) = required_role(&method);
                let code = crate::error::code_label(status.code());
                self.metrics
                    .auth
                    .denied
                    .get_or_create(&DeniedLabels { method: name, code })
                    .inc();
                let remote = conn.as_ref().and_then(|c| c.remote);
                tracing::warn!(method = name, remote = ?remote, code, reason = %status.message(), "admin call refused");
                // A known caller with too low a role is worth a line in the replicated
                // history; an unknown one only reaches the log, so that nobody without a
                // credential can write to the Raft log.
                if status.code() == tonic::Code::PermissionDenied {
                    if let Ok(p) = self.auth.authenticate(req.headers(), conn.as_ref()) {
                        if self.record_denial(&p.name, name) {
                            self.auditor.record(&p, name, String::new(), &status);
                        }
                    }
                }
                Err(status)
            }
        }
    }
}

/// Trusts the principal a peer names; the peer port's mutual TLS is the authentication.
#[derive(Clone)]
pub struct ForwardedAuth;

impl Check for ForwardedAuth {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Status> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let principal = match (
            header(PRINCIPAL_HEADER),
            header(PRINCIPAL_ROLE_HEADER).and_then(Role::parse),
        ) {
            (Some(name), Some(role)) if !name.is_empty() => Principal {
                name: name.to_owned(),
                role,
            },
            _ => {
                tracing::warn!("admin call on the peer port without a forwarded principal refused");
                return Err(Status::unauthenticated(
                    "admin calls on the peer port must be forwarded by a node and name their principal",
                ));
            }
        };
        let method = method_of(req);
        let (name, needed) = required_role(&method);
        if principal.role < needed {
            return Err(Status::permission_denied(format!(
                "{:?} has role {}; {name} needs {needed}",
                principal.name, principal.role
            )));
        }
        req.extensions_mut().insert(principal);
        Ok(())
    }
}
