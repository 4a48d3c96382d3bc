//! Webhook URLs as logs, metrics and dead-letter records may show them. A tenant's URL can carry
//! credentials (`https://user:pass@host/…`) and tokens in its query (`?token=…`): both are
//! replaced by `***`, the scheme, host, port and path are kept so an operator can still tell
//! endpoints apart. Redacting a redacted URL changes nothing, so a filter can compare the
//! redacted forms of what it is given and what it finds.

/// `url` with any userinfo and query replaced by `***` and the fragment dropped; text that is
/// not a URL becomes `<not a URL>`.
pub fn redacted_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url.trim()) else {
        return "<not a URL>".to_owned();
    };
    let mut shown = format!("{}://", parsed.scheme());
    if !parsed.username().is_empty() || parsed.password().is_some() {
        shown.push_str("***@");
    }
    if let Some(host) = parsed.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(parsed.path());
    if parsed.query().is_some() {
        shown.push_str("?***");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_queries_are_hidden() {
        assert_eq!(
            redacted_url("https://user:hunter2@hooks.example.com:8443/in?token=s3cret#x"),
            "https://***@hooks.example.com:8443/in?***"
        );
        assert_eq!(
            redacted_url("https://hooks.example.com/path"),
            "https://hooks.example.com/path"
        );
        assert_eq!(redacted_url("http://:pw@h/"), "http://***@h/");
        assert_eq!(redacted_url("not a url"), "<not a URL>");
        let once = redacted_url("https://u:p@h.example/a?b=c");
        assert_eq!(redacted_url(&once), once, "redacting again changes nothing");
    }
}
