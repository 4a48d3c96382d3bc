/// A point in time as milliseconds since the Unix epoch (UTC).
///
/// Millisecond precision is what providers report at best; keeping an integer makes ordering and
/// equality exact, which the merge relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The epoch itself, used where a provider gave no time.
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Seconds and the nanoseconds within that second, as protobuf's `Timestamp` wants them.
    pub const fn to_seconds_nanos(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1000);
        let nanos = (self.0.rem_euclid(1000) * 1_000_000) as i32;
        (secs, nanos)
    }

    /// The UTC date and time, for formatting; `None` beyond what a calendar can hold (hundreds
    /// of millennia away, never a provider's time).
    pub fn to_utc(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_millis(self.0)
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`: UTC, whole seconds, the form of every time in Twilio's REST bodies
    /// and webhooks.
    pub fn iso8601_seconds(self) -> String {
        self.to_utc()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    }

    /// RFC 3339 in UTC as `+00:00`, with the fraction only when there are milliseconds
    /// (`2020-03-23T18:45:17.250+00:00`): the proto3 JSON form of a timestamp, which the CLI
    /// prints and the simulator sends.
    pub fn rfc3339(self) -> String {
        self.to_utc().map(|t| t.to_rfc3339()).unwrap_or_default()
    }

    /// The inverse of [`Timestamp::to_seconds_nanos`]; sub-millisecond precision is truncated.
    pub const fn from_seconds_nanos(secs: i64, nanos: i32) -> Self {
        Timestamp(
            secs.saturating_mul(1000)
                .saturating_add(nanos as i64 / 1_000_000),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_is_utc_whole_seconds() {
        assert_eq!(
            Timestamp::from_unix_millis(0).iso8601_seconds(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_458_851_877_999).iso8601_seconds(),
            "2016-03-24T20:37:57Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(951_782_400_000).iso8601_seconds(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).iso8601_seconds(),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_772_323_199_000).iso8601_seconds(),
            "2026-02-28T23:59:59Z"
        );
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds_only_when_there_are_some() {
        assert_eq!(
            Timestamp::from_unix_millis(0).rfc3339(),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_584_989_117_250).rfc3339(),
            "2020-03-23T18:45:17.250+00:00"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).rfc3339(),
            "1969-12-31T23:59:59.999+00:00"
        );
    }

    #[test]
    fn seconds_nanos_round_trip_including_before_epoch() {
        for millis in [0, 1, 999, 1000, 1_732_000_000_123, -1, -1001] {
            let t = Timestamp::from_unix_millis(millis);
            let (s, n) = t.to_seconds_nanos();
            assert!((0..1_000_000_000).contains(&n));
            assert_eq!(Timestamp::from_seconds_nanos(s, n), t);
        }
    }
}
