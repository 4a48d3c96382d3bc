/// One input event on `delivery-events`, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEvent {
    /// Stable across re-sends of the same provider report.
    pub event_id: String,
    pub kind: DeliveryEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEventKind {
    Registered(crate::Registration),
    Reported(crate::StatusReport),
}

impl DeliveryEvent {
    /// The receipt both kinds of event are keyed by: the account's channel message.
    pub fn receipt_key(&self) -> crate::ReceiptKey {
        let (account, id) = match &self.kind {
            DeliveryEventKind::Registered(r) => (&r.account, &r.channel_message_id),
            DeliveryEventKind::Reported(r) => (&r.account, &r.channel_message_id),
        };
        crate::ReceiptKey::new(account.clone(), id.clone())
    }
}
