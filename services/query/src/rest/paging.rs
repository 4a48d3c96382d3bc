//! Twilio's list conventions: the `PageSize`/`Page`/`PageToken` query parameters, the
//! `{"meta": {...}, "<key>": [...]}` envelope, and absolute paging URLs that carry the caller's
//! filters first, then `PageSize`, then `Page` (contract §0).
//!
//! `PageToken` is the signed cursor of [`crate::page_token`], with the same scopes as the gRPC API,
//! so a client that follows `next_page_url` exactly as given walks every page once, each page
//! read straight from its cursor. The store pages forward only, so `previous_page_url` names the
//! previous page by `Page` alone, and a `Page` without a token is reached by walking from the
//! first page: going back costs a walk, going forward never does.
//!
//! The work of a request is bounded whatever it asks: `Page` is at most [`MAX_PAGE`], and a
//! `Page` without a token may start at most [`MAX_WALK_ITEMS`] items in (`Page × PageSize`), so a
//! walk reads at most that many entries; deeper pages are reached through `next_page_url`.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::errors::ApiError;
use crate::reads::PageRequest;

/// The largest `Page` accepted.
pub const MAX_PAGE: u64 = 1_000_000;
/// How far into a list (`Page × PageSize`) a `Page` without a `PageToken` may start.
pub const MAX_WALK_ITEMS: u64 = 10_000;

/// The paging parameters of one list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page_size: usize,
    /// "Simply for client state" (Twilio): echoed, and used to walk when no token is given.
    pub page: u64,
    pub token: Option<String>,
    /// `Order` of the messages list, lowercase; `None` elsewhere or when not given.
    pub order: Option<&'static str>,
}

impl ListQuery {
    /// The page the read is asked for: a `Page` without a token is walked to from the first.
    pub fn page_request(&self) -> PageRequest {
        PageRequest {
            size: self.page_size,
            token: self.token.clone(),
            skip: if self.token.is_none() { self.page } else { 0 },
        }
    }
}

/// Parses a list's query string. `max` is the resource's largest `PageSize`; the default page
/// size is 50, or `max` when that is smaller.
pub fn list_query(raw: Option<&str>, max: usize, with_order: bool) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery {
        page_size: 50.min(max),
        page: 0,
        token: None,
        order: None,
    };
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "PageSize" => {
                query.page_size = match value.trim().parse::<usize>() {
                    Ok(size) if (1..=max).contains(&size) => size,
                    _ => {
                        return Err(ApiError::invalid(
                            "PageSize",
                            format!("must be an integer from 1 to {max}, got {}", quoted(&value)),
                        ));
                    }
                }
            }
            "Page" => {
                query.page = match value.trim().parse::<u64>() {
                    Ok(page) if page <= MAX_PAGE => page,
                    _ => {
                        return Err(ApiError::invalid(
                            "Page",
                            format!(
                                "must be an integer from 0 to {MAX_PAGE}, got {}",
                                quoted(&value)
                            ),
                        ));
                    }
                };
            }
            "PageToken" => {
                if value.is_empty() {
                    return Err(ApiError::invalid_page_token());
                }
                query.token = Some(value.into_owned());
            }
            "Order" if with_order => {
                query.order = Some(match value.to_ascii_lowercase().as_str() {
                    "asc" => "asc",
                    "desc" => "desc",
                    _ => {
                        return Err(ApiError::invalid(
                            "Order",
                            format!("must be asc or desc, got {}", quoted(&value)),
                        ));
                    }
                });
            }
            // Twilio ignores parameters a resource does not know.
            _ => {}
        }
    }
    let start = query.page.saturating_mul(query.page_size as u64);
    if query.token.is_none() && start > MAX_WALK_ITEMS {
        return Err(ApiError::invalid(
            "Page",
            format!(
                "without a PageToken, Page × PageSize may be at most {MAX_WALK_ITEMS}, got {start}; \
                 follow next_page_url to go further"
            ),
        ));
    }
    Ok(query)
}

/// A parameter's value as an error message may quote it: at most 64 characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// Where a list lives, to build its paging URLs.
#[derive(Debug, Clone)]
pub struct ListLocation {
    /// `public_base_url` followed by the resource path, e.g. `http://host/v1/Conversations/CH…/Messages`.
    pub url: String,
    /// The caller's filters, echoed first in every paging URL (`Order=desc`).
    pub filters: Vec<(&'static str, String)>,
}

impl ListLocation {
    fn page_url(&self, size: usize, page: u64, token: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.filters {
            query.append_pair(name, value);
        }
        query.append_pair("PageSize", &size.to_string());
        query.append_pair("Page", &page.to_string());
        if let Some(token) = token {
            query.append_pair("PageToken", token);
        }
        format!("{}?{}", self.url, query.finish())
    }

    /// The `meta` of the page `query` asked for; `next_token` is `None` on the last page.
    pub fn meta(&self, key: &'static str, query: &ListQuery, next_token: Option<&str>) -> Meta {
        let size = query.page_size;
        let first_page_url = self.page_url(size, 0, None);
        Meta {
            page: query.page,
            page_size: size,
            previous_page_url: query
                .page
                .checked_sub(1)
                .map(|previous| self.page_url(size, previous, None)),
            url: self.page_url(size, query.page, query.token.as_deref()),
            first_page_url,
            next_page_url: next_token.map(|token| self.page_url(size, query.page + 1, Some(token))),
            key,
        }
    }
}

/// The `meta` object, in Twilio's key order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Meta {
    pub page: u64,
    pub page_size: usize,
    pub first_page_url: String,
    pub previous_page_url: Option<String>,
    pub url: String,
    pub next_page_url: Option<String>,
    pub key: &'static str,
}

/// A list response: `meta` first, then the items under `meta.key`.
#[derive(Debug)]
pub struct ListPage<T> {
    pub meta: Meta,
    pub items: Vec<T>,
}

impl<T: Serialize> Serialize for ListPage<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("meta", &self.meta)?;
        map.serialize_entry(self.meta.key, &self.items)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_and_order_is_lowercased() {
        let q = list_query(Some("Order=DeSc&PageSize=2&Other=x"), 100, true).unwrap();
        assert_eq!((q.order, q.page_size, q.page), (Some("desc"), 2, 0));
        assert_eq!(list_query(None, 50, false).unwrap().page_size, 50);
        assert_eq!(list_query(None, 5, false).unwrap().page_size, 5);
        for bad in [
            "PageSize=0",
            "PageSize=101",
            "PageSize=x",
            "Page=-1",
            "Order=up",
        ] {
            assert_eq!(
                list_query(Some(bad), 100, true).unwrap_err().code,
                20001,
                "{bad}"
            );
        }
        assert_eq!(
            list_query(Some("PageToken="), 100, true).unwrap_err().code,
            21481
        );
    }

    #[test]
    fn pages_are_bounded() {
        let overflow =
            list_query(Some("Page=18446744073709551615&PageToken=t"), 50, false).unwrap_err();
        assert_eq!(overflow.code, 20001);
        assert!(overflow.message.contains("Page"), "{}", overflow.message);
        let deepest = format!("Page={MAX_PAGE}&PageToken=t");
        assert_eq!(
            list_query(Some(&deepest), 50, false).unwrap().page,
            MAX_PAGE
        );
        // Without a token, the walk stops at MAX_WALK_ITEMS items.
        assert_eq!(
            list_query(Some("Page=200&PageSize=50"), 50, false)
                .unwrap()
                .page,
            200
        );
        let far = list_query(Some("Page=201&PageSize=50"), 50, false).unwrap_err();
        assert!(far.message.contains("PageToken"), "{}", far.message);
        let location = ListLocation {
            url: "http://h/l".into(),
            filters: Vec::new(),
        };
        let last = list_query(Some(&deepest), 50, false).unwrap();
        assert!(
            location
                .meta("items", &last, Some("t"))
                .next_page_url
                .is_some()
        );
    }

    #[test]
    fn urls_carry_filters_then_page_size_then_page() {
        let location = ListLocation {
            url: "http://h/v1/Conversations/CH1/Messages".into(),
            filters: vec![("Order", "desc".into())],
        };
        let query = list_query(Some("Order=DESC&PageSize=2"), 100, true).unwrap();
        let meta = location.meta("messages", &query, Some("t0k"));
        assert_eq!(
            meta.url,
            "http://h/v1/Conversations/CH1/Messages?Order=desc&PageSize=2&Page=0"
        );
        assert_eq!(meta.first_page_url, meta.url);
        assert_eq!(meta.previous_page_url, None);
        let third =
            list_query(Some("Order=desc&PageSize=2&Page=2&PageToken=t1"), 100, true).unwrap();
        let last = location.meta("messages", &third, None);
        assert_eq!(
            last.previous_page_url.as_deref(),
            Some("http://h/v1/Conversations/CH1/Messages?Order=desc&PageSize=2&Page=1")
        );
        assert_eq!(last.next_page_url, None);
        assert_eq!(
            meta.next_page_url.as_deref(),
            Some(
                "http://h/v1/Conversations/CH1/Messages?Order=desc&PageSize=2&Page=1&PageToken=t0k"
            )
        );
    }
}
