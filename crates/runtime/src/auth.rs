//! The credential checks every surface shares: comparisons that take the same time wherever two
//! values differ (`subtle`), and HTTP Basic credentials read by the `headers` crate (the scheme
//! name matched case-insensitively, as RFC 9110 says).

use axum::http::HeaderMap;
use headers::authorization::{Authorization, Basic};
use headers::{Header, HeaderMapExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// SHA-256 of a credential: digests of equal length are what [`same_secret`] compares, so not even
/// the length of the expected value shows.
pub fn digest(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// Whether `given` is the configured `expected` credential. An empty `expected` (not configured)
/// matches nothing.
pub fn same_secret(given: &str, expected: &Secret) -> bool {
    !expected.is_empty() && same_bytes(&digest(given), &digest(expected.expose()))
}

/// The user name and password of an `Authorization: Basic …` header, if the request has one
/// that decodes.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let basic = headers.typed_get::<Authorization<Basic>>()?;
    Some((basic.username().to_owned(), basic.password().to_owned()))
}

/// [`basic_credentials`] of one header value (gRPC metadata carries it outside a `HeaderMap`).
pub fn basic_credentials_of(value: &str) -> Option<(String, String)> {
    let value = axum::http::HeaderValue::from_str(value.trim()).ok()?;
    let basic = Authorization::<Basic>::decode(&mut std::iter::once(&value)).ok()?;
    Some((basic.username().to_owned(), basic.password().to_owned()))
}

/// The `Authorization` value of Basic credentials, for clients and tests.
pub fn basic_authorization(user: &str, password: &str) -> String {
    let mut values = Vec::new();
    Authorization::basic(user, password).encode(&mut values);
    values
        .first()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_tell_equal_from_different() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
        assert!(same_secret("hunter2", &Secret::new("hunter2")));
        assert!(!same_secret("hunter3", &Secret::new("hunter2")));
        assert!(
            !same_secret("", &Secret::new("")),
            "an unset secret matches nothing"
        );
    }

    #[test]
    fn basic_credentials_round_trip_and_the_scheme_is_case_insensitive() {
        let value = basic_authorization("AC1", "to:ken");
        assert_eq!(
            basic_credentials_of(&value),
            Some(("AC1".to_owned(), "to:ken".to_owned()))
        );
        let encoded = value.strip_prefix("Basic ").unwrap();
        for scheme in ["basic", "BASIC", "Basic"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                "authorization",
                format!("{scheme} {encoded}").parse().unwrap(),
            );
            assert_eq!(
                basic_credentials(&headers),
                Some(("AC1".to_owned(), "to:ken".to_owned())),
                "{scheme}"
            );
        }
        for bad in ["Bearer abc", "Basic !!!", "Basic", ""] {
            assert_eq!(basic_credentials_of(bad), None, "{bad}");
        }
    }
}
