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
    /// The channel message both kinds of event are keyed by.
    pub fn channel_message_id(&self) -> &crate::ChannelMessageId {
        match &self.kind {
            DeliveryEventKind::Registered(r) => &r.channel_message_id,
            DeliveryEventKind::Reported(r) => &r.channel_message_id,
        }
    }
}
