//! The tower layers that put [`Principal`]s on admin calls.
//!
//! [`AdminAuth`] guards the admin surface where operators reach it (the client port, or
//! `server.admin_listen`): it authenticates and authorizes every call before the handler
//! runs, so a refused call changes nothing. [`ForwardedAuth`] guards the copy of the admin
//! service on the peer port, which only other nodes reach (mutual TLS with the cluster CA):
//! they forward writes to the leader and name the principal they already authorized.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use super::{required_role, Authenticator, Principal, Role};
use crate::audit::Auditor;
use crate::metrics::{DeniedLabels, Metrics};
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

#[derive(Clone)]
pub struct AdminAuthLayer {
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub auditor: Auditor,
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;
    fn layer(&self, inner: S) -> AdminAuth<S> {
        AdminAuth {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AdminAuth<S> {
    layer: AdminAuthLayer,
    inner: S,
}

impl<S> Service<Request<Body>> for AdminAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let method = method_of(&req);
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let l = &self.layer;
        match l.auth.authorize(&method, req.headers(), conn.as_ref()) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                self.inner.call(req).boxed()
            }
            Err(status) => {
                let (name, _) = required_role(&method);
                let code = crate::error::code_label(status.code());
                l.metrics
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
                    if let Ok(p) = l.auth.authenticate(req.headers(), conn.as_ref()) {
                        l.auditor.record(&p, name, String::new(), &status);
                    }
                }
                futures::future::ready(Ok(status.into_http())).boxed()
            }
        }
    }
}

/// Trusts the principal a peer names; the peer port's mutual TLS is the authentication.
#[derive(Clone)]
pub struct ForwardedAuthLayer;

impl<S> Layer<S> for ForwardedAuthLayer {
    type Service = ForwardedAuth<S>;
    fn layer(&self, inner: S) -> ForwardedAuth<S> {
        ForwardedAuth { inner }
    }
}

#[derive(Clone)]
pub struct ForwardedAuth<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for ForwardedAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
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
                let status = Status::unauthenticated(
                    "admin calls on the peer port must be forwarded by a node and name their principal",
                );
                return futures::future::ready(Ok(status.into_http())).boxed();
            }
        };
        let method = method_of(&req);
        let (name, needed) = required_role(&method);
        if principal.role < needed {
            let status = Status::permission_denied(format!(
                "{:?} has role {}; {name} needs {needed}",
                principal.name, principal.role
            ));
            return futures::future::ready(Ok(status.into_http())).boxed();
        }
        req.extensions_mut().insert(principal);
        self.inner.call(req).boxed()
    }
}
