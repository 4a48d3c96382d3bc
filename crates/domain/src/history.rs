//! A receipt's history: for every status the providers reported for it, the earliest report of
//! that status.
//!
//! The current status keeps only the greatest report (see [`crate::receipt`]); what a person reads
//! a timeline for is every status with the time it was reached, so the history keeps, per
//! [`DeliveryStatus`], the report with the smallest [`StatusReport::rank`] (its earliest provider
//! time, the rest of the rank breaking ties). That is a grow-only map merged by minimum, so like
//! the current report it does not depend on the order, duplicates or replays of the reports.

use std::collections::BTreeMap;

use crate::receipt::StatusReport;
use crate::status::DeliveryStatus;

/// The earliest report of every status reported for one receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    earliest: BTreeMap<DeliveryStatus, StatusReport>,
}

impl History {
    /// Keeps `report` if it is the first of its status or ranks below the one kept; says whether
    /// the history changed.
    pub fn record(&mut self, report: &StatusReport) -> bool {
        match self.earliest.get(&report.status) {
            Some(kept) if kept.rank() <= report.rank() => false,
            _ => {
                self.earliest.insert(report.status, report.clone());
                true
            }
        }
    }

    /// Takes in every report of `other`; says whether the history changed.
    pub fn merge(&mut self, other: &History) -> bool {
        other
            .earliest
            .values()
            .fold(false, |changed, report| self.record(report) | changed)
    }

    /// The earliest report of `status`, if one was reported.
    pub fn get(&self, status: DeliveryStatus) -> Option<&StatusReport> {
        self.earliest.get(&status)
    }

    pub fn len(&self) -> usize {
        self.earliest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.earliest.is_empty()
    }

    /// The reports in the order a receipt goes through them: by rank, so by phase, then
    /// provider time, then the fixed precedence of statuses.
    pub fn in_order(&self) -> Vec<&StatusReport> {
        let mut reports: Vec<&StatusReport> = self.earliest.values().collect();
        reports.sort_by(|a, b| a.rank().cmp(&b.rank()));
        reports
    }

    /// The reports by status, in the order of [`DeliveryStatus`] (what storage writes).
    pub fn iter(&self) -> impl Iterator<Item = &StatusReport> {
        self.earliest.values()
    }
}

impl<'a> FromIterator<&'a StatusReport> for History {
    fn from_iter<I: IntoIterator<Item = &'a StatusReport>>(reports: I) -> Self {
        let mut history = History::default();
        for report in reports {
            history.record(report);
        }
        history
    }
}

impl FromIterator<StatusReport> for History {
    fn from_iter<I: IntoIterator<Item = StatusReport>>(reports: I) -> Self {
        let reports: Vec<StatusReport> = reports.into_iter().collect();
        reports.iter().collect()
    }
}
