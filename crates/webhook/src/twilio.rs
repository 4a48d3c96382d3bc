//! `X-Twilio-Signature` (contract §6a): base64 of HMAC-SHA1, keyed with the account's auth
//! token, over the full URL (without its fragment and any `user:pass@`) followed by every POST
//! parameter as `name` + `value`, names sorted bytewise and each name's values sorted and
//! de-duplicated. A GET request has its parameters in the URL and signs no others.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The header name.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// The string that is signed.
pub fn signed_string(url: &str, params: &[(String, String)]) -> String {
    let mut s = signing_url(url);
    let mut sorted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().push(value);
    }
    for (name, mut values) in sorted {
        values.sort_unstable();
        values.dedup();
        for value in values {
            s.push_str(name);
            s.push_str(value);
        }
    }
    s
}

/// The URL as Twilio signs it: no fragment, no credentials.
fn signing_url(url: &str) -> String {
    let url = url.split_once('#').map_or(url, |(base, _)| base);
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

/// The `X-Twilio-Signature` of a request to `url` with the POST `params` (none for GET).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(signed_string(url, params).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    // The published test vectors of contract §6a.
    #[test]
    fn security_doc_vector() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signed_string(url, &params),
            "https://example.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212"
        );
        assert_eq!(
            signature("12345", url, &params),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn python_library_vectors_with_and_without_port() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]);
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
    }

    #[test]
    fn multi_value_vector_sorts_and_deduplicates_values() {
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn json_body_vector_signs_the_url_alone() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(signature("12345", url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
    }

    #[test]
    fn fragment_and_credentials_are_not_signed() {
        assert_eq!(
            signing_url("https://u:p@example.com/x?a=1#rc=2"),
            "https://example.com/x?a=1"
        );
        assert_eq!(
            signing_url("https://example.com/x@y"),
            "https://example.com/x@y"
        );
    }
}
