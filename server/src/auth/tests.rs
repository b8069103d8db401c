//! Credentials against roles, without a server: which calls pass, and with which code the
//! others are refused.

use http::HeaderMap;
use tonic::Code;

use super::*;

const OPERATOR_TOKEN: &str = "rkd_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const READER_TOKEN: &str = "rkd_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn auth(mode: SecurityMode) -> Authenticator {
    Authenticator::new(&AuthConfig {
        mode,
        tokens: vec![
            TokenEntry {
                name: "deployer".into(),
                role: Role::Operator,
                sha256: token_hash(OPERATOR_TOKEN),
            },
            TokenEntry {
                name: "dashboard".into(),
                role: Role::Reader,
                sha256: token_hash(READER_TOKEN),
            },
        ],
        ..AuthConfig::default()
    })
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

fn code(r: Result<Principal, tonic::Status>) -> Code {
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

#[test]
fn roles_are_ordered_and_every_admin_method_has_one() {
    assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
    assert_eq!(required_role("History"), ("History", Role::Reader));
    assert_eq!(required_role("Promote"), ("Promote", Role::Operator));
    assert_eq!(required_role("RemoveNode"), ("RemoveNode", Role::Admin));
    assert_eq!(required_role("SomethingNew"), ("unknown", Role::Admin));
}

#[test]
fn a_token_gets_its_role_and_no_more() {
    let a = auth(SecurityMode::Required);
    let p = a
        .authorize("Promote", &bearer(OPERATOR_TOKEN), None)
        .expect("operator may promote");
    assert_eq!(
        p,
        Principal {
            name: "deployer".into(),
            role: Role::Operator
        }
    );
    assert_eq!(
        code(a.authorize("History", &bearer(READER_TOKEN), None)),
        Code::Ok
    );
    assert_eq!(
        code(a.authorize("Promote", &bearer(READER_TOKEN), None)),
        Code::PermissionDenied
    );
    assert_eq!(
        code(a.authorize("RotateKeys", &bearer(OPERATOR_TOKEN), None)),
        Code::PermissionDenied
    );
}

#[test]
fn missing_or_unknown_credentials_are_unauthenticated_and_never_echoed() {
    let a = auth(SecurityMode::Required);
    assert_eq!(
        code(a.authorize("History", &HeaderMap::new(), None)),
        Code::Unauthenticated
    );
    let wrong = "rkd_this-token-was-never-issued";
    let err = a
        .authorize("History", &bearer(wrong), None)
        .expect_err("unknown token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains(wrong), "{}", err.message());
    let mut basic = HeaderMap::new();
    basic.insert(
        http::header::AUTHORIZATION,
        "Basic abc".parse().expect("header"),
    );
    assert_eq!(
        code(a.authorize("History", &basic, None)),
        Code::Unauthenticated
    );
}

#[test]
fn insecure_dev_admits_anonymous_callers_but_still_checks_presented_tokens() {
    let a = auth(SecurityMode::InsecureDev);
    let p = a
        .authorize("RemoveNode", &HeaderMap::new(), None)
        .expect("anonymous admin in dev mode");
    assert_eq!(p.name, "anonymous");
    assert_eq!(
        code(a.authorize("History", &bearer("rkd_bogus"), None)),
        Code::Unauthenticated
    );
    assert_eq!(
        code(a.authorize("Promote", &bearer(READER_TOKEN), None)),
        Code::PermissionDenied
    );
}
