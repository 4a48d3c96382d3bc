//! The projector's records as stored (format 2), their keys, and what a record of format 1
//! becomes.

use prost::Message;
use receipts_domain::{AccountSid, DeliveryStatus, ReceiptKey, ReceiptState, StatusReport};
use receipts_proto::convert::status_to_wire;
use receipts_proto::v1;

use crate::compact::{self, Keyed, KeyedBy, StoredRegistration, StoredReport};
use crate::format::Moved;
use crate::{CorruptValue, StoreError};

const STATE: u8 = 0x01;
pub(super) const PARKED: u8 = 0x02;

fn receipt_key(kind: u8, key: &ReceiptKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 17 + 1 + key.channel_message_id.as_str().len());
    out.push(kind);
    compact::put_sid(&mut out, &key.account);
    compact::put_channel_message_id(&mut out, &key.channel_message_id);
    out
}

pub(super) fn state_key(key: &ReceiptKey) -> Vec<u8> {
    receipt_key(STATE, key)
}

pub(super) fn parked_key(key: &ReceiptKey) -> Vec<u8> {
    receipt_key(PARKED, key)
}

/// The receipt a state or parked key is of.
pub(super) fn key_of(key: &[u8]) -> Result<ReceiptKey, CorruptValue> {
    let mut rest = key.get(1..).ok_or("an empty key")?;
    let account: AccountSid = compact::take_sid(&mut rest)?;
    Ok(ReceiptKey {
        account,
        channel_message_id: compact::channel_message_id_from(rest)?,
    })
}

/// A receipt's state as stored: the registration without its account and channel message id,
/// and the reports without either. `best` is left out when it is the history's report of its
/// status, which `best_status` then names.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredState {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<StoredRegistration>,
    #[prost(message, optional, tag = "2")]
    pub best: Option<StoredReport>,
    #[prost(int32, optional, tag = "3")]
    pub best_status: Option<i32>,
    #[prost(uint64, tag = "4")]
    pub version: u64,
    #[prost(message, repeated, tag = "5")]
    pub history: Vec<StoredReport>,
}

impl From<&ReceiptState> for StoredState {
    fn from(state: &ReceiptState) -> Self {
        let in_history = |best: &StatusReport| state.history.get(best.status) == Some(best);
        let (best, best_status) = match &state.best {
            Some(best) if in_history(best) => (None, Some(status_to_wire(best.status).into())),
            Some(best) => (Some(best.into()), None),
            None => (None, None),
        };
        StoredState {
            registration: state
                .registration
                .as_ref()
                .map(|r| StoredRegistration::new(r, KeyedBy::ChannelMessage)),
            best,
            best_status,
            version: state.version,
            history: state.history.iter().map(Into::into).collect(),
        }
    }
}

impl StoredState {
    pub(super) fn state(&self, key: &ReceiptKey) -> Result<ReceiptState, CorruptValue> {
        let (account, id) = (&key.account, &key.channel_message_id);
        let history = self
            .history
            .iter()
            .map(|report| report.report(account, id))
            .collect::<Result<Vec<_>, _>>()?;
        let history: receipts_domain::History = history.into_iter().collect();
        let best = match (&self.best, self.best_status) {
            (Some(best), _) => Some(best.report(account, id)?),
            (None, Some(status)) => {
                let status: DeliveryStatus =
                    receipts_proto::convert::status_from_wire("best_status", status)?
                        .ok_or("`best_status` names no status")?;
                Some(
                    history
                        .get(status)
                        .cloned()
                        .ok_or("`best_status` names a status the history lacks")?,
                )
            }
            (None, None) => None,
        };
        Ok(ReceiptState {
            registration: self
                .registration
                .as_ref()
                .map(|r| r.registration(account, Keyed::ChannelMessage(id)))
                .transpose()?,
            best,
            version: self.version,
            history,
        })
    }
}

pub(super) fn encode_state(state: &ReceiptState) -> Vec<u8> {
    StoredState::from(state).encode_to_vec()
}

/// What a format 1 record of the projector becomes.
pub(super) fn from_format1(key: &[u8], value: &[u8]) -> Result<Moved, StoreError> {
    let receipt = |key: &[u8]| {
        std::str::from_utf8(&key[2..])
            .ok()
            .and_then(|s| ReceiptKey::parse(s).ok())
            .ok_or_else(|| StoreError::corrupt(key, "not a receipt key"))
    };
    match key.first() {
        Some(b's') => {
            let id = receipt(key)?;
            let stored =
                v1::StoredReceiptState::decode(value).map_err(|e| StoreError::corrupt(key, e))?;
            let state = ReceiptState::try_from(&stored).map_err(|e| StoreError::corrupt(key, e))?;
            Ok(Some((state_key(&id), encode_state(&state))))
        }
        Some(b'p') => Ok(Some((parked_key(&receipt(key)?), value.to_vec()))),
        _ => Err(StoreError::corrupt(
            key,
            "not a key of the projector's format 1",
        )),
    }
}
