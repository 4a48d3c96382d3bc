//! The query application layer: every read of the read model, written once for the gRPC service
//! ([`crate::grpc`]) and the REST facade ([`crate::rest`]).
//!
//! A read takes the caller's account and the sids of its request as given, and does everything
//! the APIs share: parses the sids, keeps the read inside the caller's account (and, in REST's
//! `Services/{IS}` family, inside that chat service), checks that what is read exists, opens
//! and issues page tokens, and answers store values or a [`ReadError`]. The adapters decode
//! their request into [`Sids`] and a [`PageRequest`], call one method, and encode what it
//! answers; [`ReadError::answer`] is the one table of how each failure is answered in both APIs.
//! Nothing else in the service calls the [`QueryStore`] for reads.
//!
//! Checks come in one order in both APIs: the sids (chat service, conversation, message,
//! receipt), then the paging parameters, then the page token, then existence.

mod error;

use std::sync::Arc;

use receipts_domain::{
    AccountSid, ChatServiceSid, ConversationSid, IdError, MessageSid, Receipt, ReceiptChange,
    ReceiptSid,
};
use receipts_store::{MessageView, QueryStore, Rollup, SortOrder, StoreError, TimelineEntry};

pub use error::{Answer, Read, ReadError, SidField};

use crate::page_token::{PageTokens, messages_scope, receipts_scope};

/// The most receipts one page holds.
pub const RECEIPTS_PAGE_MAX: usize = 50;
/// The most messages one page holds.
pub const MESSAGES_PAGE_MAX: usize = 100;
/// A page's size when the caller names none, or the list's largest when that is smaller.
pub const DEFAULT_PAGE: usize = 50;

/// The sids of one request, as the caller gave them; a read looks only at those it needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sids<'a> {
    /// The chat service of REST's `Services/{IS}` family: the read then sees only that
    /// service's data. `None` in gRPC and in the default family.
    pub service: Option<&'a str>,
    pub conversation: &'a str,
    pub message: &'a str,
    pub receipt: &'a str,
}

/// Which page of a list is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    /// A token an earlier page issued; `None` for the first page.
    pub token: Option<String>,
    /// Pages to step over from where the token (or the list) starts: REST's `Page` without a
    /// token. The adapter bounds it.
    pub skip: u64,
}

impl PageRequest {
    /// gRPC's paging: a `page_size` of 0 is the default, an empty `page_token` the first page.
    pub fn grpc(page_size: u32, page_token: String, max: usize) -> Result<Self, ReadError> {
        let size = match page_size {
            0 => DEFAULT_PAGE.min(max),
            n if n as usize <= max => n as usize,
            requested => return Err(ReadError::PageSize { max, requested }),
        };
        Ok(PageRequest {
            size,
            token: (!page_token.is_empty()).then_some(page_token),
            skip: 0,
        })
    }
}

/// One page of a list, and the token of the next page (`None` on the last).
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// A receipt's history, with the sids it was read under.
#[derive(Debug, Clone)]
pub struct ReceiptTimeline {
    pub account: AccountSid,
    pub conversation: ConversationSid,
    pub message: MessageSid,
    pub receipt: ReceiptSid,
    /// Every applied version, oldest first.
    pub entries: Vec<TimelineEntry>,
}

/// Which changes one watch stream is shown: its account's, of one conversation or all.
#[derive(Debug, Clone)]
pub struct WatchScope {
    account: AccountSid,
    conversation: Option<ConversationSid>,
}

impl WatchScope {
    pub fn admits(&self, change: &ReceiptChange) -> bool {
        let registration = &change.receipt.registration;
        registration.account == self.account
            && self
                .conversation
                .as_ref()
                .is_none_or(|c| *c == registration.conversation)
    }
}

/// The reads, over one store and one page-token key.
#[derive(Clone)]
pub struct Reads {
    store: Arc<dyn QueryStore>,
    tokens: PageTokens,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").finish_non_exhaustive()
    }
}

/// Parses one sid of `read`; an empty value is a missing sid, told apart for gRPC's sake.
fn sid<T>(
    read: Read,
    field: SidField,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<T, ReadError> {
    parse(value).map_err(|source| {
        if value.is_empty() {
            ReadError::MissingSid {
                field,
                read,
                source,
            }
        } else {
            ReadError::MalformedSid {
                field,
                read,
                source,
            }
        }
    })
}

/// Whether data of `chat_service` is visible through `service`: everything is in the
/// default family, only that service's data in a service's.
fn in_service(service: Option<&ChatServiceSid>, chat_service: Option<&ChatServiceSid>) -> bool {
    service.is_none_or(|service| chat_service == Some(service))
}

impl Sids<'_> {
    fn service(&self, read: Read) -> Result<Option<ChatServiceSid>, ReadError> {
        self.service
            .map(|value| sid(read, SidField::ChatService, value, ChatServiceSid::parse))
            .transpose()
    }

    fn conversation(&self, read: Read) -> Result<ConversationSid, ReadError> {
        sid(
            read,
            SidField::Conversation,
            self.conversation,
            ConversationSid::parse,
        )
    }

    /// The chat service, conversation and message, in that order.
    fn message(
        &self,
        read: Read,
    ) -> Result<(Option<ChatServiceSid>, ConversationSid, MessageSid), ReadError> {
        let service = self.service(read)?;
        let conversation = self.conversation(read)?;
        let message = sid(read, SidField::Message, self.message, MessageSid::parse)?;
        Ok((service, conversation, message))
    }

    fn receipt(&self, read: Read) -> Result<ReceiptSid, ReadError> {
        sid(read, SidField::Receipt, self.receipt, ReceiptSid::parse)
    }
}

impl Reads {
    pub fn new(store: Arc<dyn QueryStore>, tokens: PageTokens) -> Self {
        Reads { store, tokens }
    }

    /// Runs a scan on the blocking pool: sled scans must not stall the executor. Point reads
    /// (a key or two) run on the calling task instead: sled answers them from its page cache in
    /// microseconds, less than the hop to the blocking pool and back costs.
    async fn scan<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn QueryStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || read(&*store)).await??)
    }

    /// The cursor of `page`'s token, if it has one this list issued.
    fn cursor<C>(
        &self,
        scope: &str,
        page: &PageRequest,
        parse: impl FnOnce(&str) -> Option<C>,
    ) -> Result<Option<C>, ReadError> {
        let Some(token) = &page.token else {
            return Ok(None);
        };
        let cursor = self.tokens.open(scope, token)?;
        parse(&cursor).map(Some).ok_or(ReadError::PageCursor)
    }

    /// A message with its delivery summary.
    pub fn message_delivery(
        &self,
        account: &AccountSid,
        sids: Sids<'_>,
    ) -> Result<MessageView, ReadError> {
        let (service, conversation, message) = sids.message(Read::MessageDelivery)?;
        match self.store.message(account, &conversation, &message)? {
            Some(view) if in_service(service.as_ref(), view.chat_service.as_ref()) => Ok(view),
            _ => Err(ReadError::MessageNotFound {
                conversation,
                message,
            }),
        }
    }

    /// A page of a message's receipts, by receipt sid. `page` is the adapter's reading of its
    /// paging parameters: its error, if any, is raised after the sids' and is the caller's own.
    pub async fn receipts<E: From<ReadError>>(
        &self,
        account: &AccountSid,
        sids: Sids<'_>,
        page: Result<PageRequest, E>,
    ) -> Result<Listed<Receipt>, E> {
        let (service, conversation, message) = sids.message(Read::Receipts)?;
        let page = page?;
        let scope = receipts_scope(account, &conversation, &message);
        let after = self.cursor(&scope, &page, |cursor| ReceiptSid::parse(cursor).ok())?;
        let (a, c, m) = (account.clone(), conversation.clone(), message.clone());
        let (size, skip) = (page.size, page.skip);
        let (view, mut found) = self
            .scan(move |store| {
                let view = store.message(&a, &c, &m)?;
                let mut found = store.receipts_page(&a, &c, &m, size, after.as_ref())?;
                for _ in 0..skip {
                    match found.next.take() {
                        Some(next) => found = store.receipts_page(&a, &c, &m, size, Some(&next))?,
                        None => {
                            found.items.clear();
                            break;
                        }
                    }
                }
                Ok((view, found))
            })
            .await?;
        if !view.is_some_and(|view| in_service(service.as_ref(), view.chat_service.as_ref())) {
            return Err(ReadError::MessageNotFound {
                conversation,
                message,
            }
            .into());
        }
        Ok(Listed {
            next_token: found
                .next
                .take()
                .map(|sid| self.tokens.issue(&scope, sid.as_str())),
            items: found.items,
        })
    }

    /// One receipt, latest status only.
    pub fn receipt(&self, account: &AccountSid, sids: Sids<'_>) -> Result<Receipt, ReadError> {
        let read = Read::Receipt;
        let (service, conversation, message) = sids.message(read)?;
        let receipt = sids.receipt(read)?;
        match self
            .store
            .receipt(account, &conversation, &message, &receipt)?
        {
            Some(found)
                if in_service(service.as_ref(), found.registration.chat_service.as_ref()) =>
            {
                Ok(found)
            }
            _ => Err(ReadError::ReceiptNotFound(receipt)),
        }
    }

    /// Every applied version of one receipt, oldest first.
    pub async fn receipt_timeline(
        &self,
        account: &AccountSid,
        sids: Sids<'_>,
    ) -> Result<ReceiptTimeline, ReadError> {
        let read = Read::Timeline;
        let (service, conversation, message) = sids.message(read)?;
        let receipt = sids.receipt(read)?;
        let (a, c, m, r) = (
            account.clone(),
            conversation.clone(),
            message.clone(),
            receipt.clone(),
        );
        let entries = self
            .scan(move |store| {
                // Only a service's reads need the receipt's chat service.
                if let Some(service) = &service {
                    let found = store.receipt(&a, &c, &m, &r)?;
                    if !found.is_some_and(|found| {
                        found.registration.chat_service.as_ref() == Some(service)
                    }) {
                        return Ok(None);
                    }
                }
                store.timeline(&a, &c, &m, &r)
            })
            .await?;
        match entries {
            Some(entries) => Ok(ReceiptTimeline {
                account: account.clone(),
                conversation,
                message,
                receipt,
                entries,
            }),
            None => Err(ReadError::ReceiptNotFound(receipt)),
        }
    }

    /// A page of a conversation's messages in `order` of their index; see [`Self::receipts`]
    /// for `page`. A conversation exists here once one of its messages has a receipt.
    pub async fn messages<E: From<ReadError>>(
        &self,
        account: &AccountSid,
        sids: Sids<'_>,
        page: Result<(SortOrder, PageRequest), E>,
    ) -> Result<Listed<MessageView>, E> {
        let service = sids.service(Read::Messages)?;
        let conversation = sids.conversation(Read::Messages)?;
        let (order, page) = page?;
        let scope = messages_scope(account, &conversation, order);
        let after = self.cursor(&scope, &page, |cursor| cursor.parse::<u64>().ok())?;
        let (a, c) = (account.clone(), conversation.clone());
        let (size, skip) = (page.size, page.skip);
        let (first, found) = self
            .scan(move |store| {
                let first = store.messages_page(&a, &c, SortOrder::Ascending, 1, None)?;
                let mut found = store.messages_page(&a, &c, order, size, after)?;
                for _ in 0..skip {
                    match found.next {
                        Some(next) => {
                            found = store.messages_page(&a, &c, order, size, Some(next))?
                        }
                        None => {
                            found.items.clear();
                            break;
                        }
                    }
                }
                Ok((first.items.into_iter().next(), found))
            })
            .await?;
        if !first.is_some_and(|first| in_service(service.as_ref(), first.chat_service.as_ref())) {
            return Err(ReadError::ConversationNotFound(conversation).into());
        }
        Ok(Listed {
            next_token: found
                .next
                .map(|index| self.tokens.issue(&scope, &index.to_string())),
            items: found.items,
        })
    }

    /// A conversation's counts over all its messages.
    pub fn conversation_rollup(
        &self,
        account: &AccountSid,
        sids: Sids<'_>,
    ) -> Result<Rollup, ReadError> {
        let conversation = sids.conversation(Read::Rollup)?;
        self.store
            .rollup(account, &conversation)?
            .ok_or(ReadError::ConversationNotFound(conversation))
    }

    /// What a watch stream of `account` is shown: one conversation's changes, or with no
    /// conversation sid, all of the account's.
    pub fn watch_scope(
        &self,
        account: &AccountSid,
        sids: Sids<'_>,
    ) -> Result<WatchScope, ReadError> {
        let conversation = match sids.conversation {
            "" => None,
            _ => Some(sids.conversation(Read::Watch)?),
        };
        Ok(WatchScope {
            account: account.clone(),
            conversation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_pages_default_and_are_bounded() {
        let first = PageRequest::grpc(0, String::new(), RECEIPTS_PAGE_MAX).unwrap();
        assert_eq!((first.size, first.token, first.skip), (50, None, 0));
        assert_eq!(PageRequest::grpc(0, String::new(), 5).unwrap().size, 5);
        let next = PageRequest::grpc(100, "t".into(), MESSAGES_PAGE_MAX).unwrap();
        assert_eq!((next.size, next.token.as_deref()), (100, Some("t")));
        assert!(matches!(
            PageRequest::grpc(51, String::new(), RECEIPTS_PAGE_MAX),
            Err(ReadError::PageSize {
                max: 50,
                requested: 51
            })
        ));
    }

    #[test]
    fn an_empty_sid_is_missing_and_any_other_bad_one_malformed() {
        let sids = Sids {
            conversation: "CH1",
            ..Sids::default()
        };
        assert!(matches!(
            sids.message(Read::Receipts),
            Err(ReadError::MalformedSid {
                field: SidField::Conversation,
                ..
            })
        ));
        let sids = Sids {
            conversation: "CH00000000000000000000000000000001",
            ..Sids::default()
        };
        assert!(matches!(
            sids.message(Read::Receipts),
            Err(ReadError::MissingSid {
                field: SidField::Message,
                ..
            })
        ));
        // The chat service comes first.
        let sids = Sids {
            service: Some(""),
            ..Sids::default()
        };
        assert!(matches!(
            sids.message(Read::Receipts),
            Err(ReadError::MissingSid {
                field: SidField::ChatService,
                ..
            })
        ));
    }
}
