//! The proto files against the descriptor set of the last release (`proto/releases/`), and the
//! compatibility check itself against the changes it must refuse and allow.

use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use receipts_proto::compat::breaking_changes;

fn releases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/releases")
}

/// The release descriptor sets, oldest first (by their `MAJOR.MINOR.PATCH` file names).
fn releases() -> Vec<(Vec<u64>, PathBuf)> {
    let mut releases: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(releases_dir())
        .expect("proto/releases exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "binpb"))
        .map(|path| {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let version = stem
                .split('.')
                .map(|part| {
                    part.parse()
                        .unwrap_or_else(|_| panic!("{stem} is not MAJOR.MINOR.PATCH"))
                })
                .collect();
            (version, path)
        })
        .collect();
    releases.sort();
    releases
}

fn current() -> FileDescriptorSet {
    FileDescriptorSet::decode(receipts_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn message<'a>(set: &'a mut FileDescriptorSet, name: &str) -> &'a mut DescriptorProto {
    set.file
        .iter_mut()
        .filter(|file| file.package() == "receipts.v1")
        .flat_map(|file| file.message_type.iter_mut())
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no message receipts.v1.{name}"))
}

/// The problems `change` makes to the current files, as `element: problem` lines.
fn breaks_of(change: impl FnOnce(&mut FileDescriptorSet)) -> Vec<String> {
    let baseline = current();
    let mut changed = baseline.clone();
    change(&mut changed);
    breaking_changes(&baseline, &changed)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_protos_read_what_every_release_wrote() {
    let releases = releases();
    assert!(
        !releases.is_empty(),
        "no descriptor set in {}",
        releases_dir().display()
    );
    let current = current();
    for (_, path) in &releases {
        let baseline = FileDescriptorSet::decode(std::fs::read(path).unwrap().as_slice())
            .unwrap_or_else(|e| panic!("{} is not a descriptor set: {e}", path.display()));
        assert!(
            baseline.file.iter().any(|f| f.package() == "receipts.v1"),
            "{} holds no receipts.v1 file",
            path.display()
        );
        let breaks = breaking_changes(&baseline, &current);
        assert!(
            breaks.is_empty(),
            "proto/ breaks wire compatibility with {}:\n{}",
            path.display(),
            breaks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn additions_are_compatible() {
    let breaks = breaks_of(|set| {
        let updated = message(set, "ReceiptUpdated");
        let mut field = updated.field[2].clone();
        field.name = Some("previous_raw_status".into());
        field.json_name = Some("previousRawStatus".into());
        field.number = Some(4);
        field.set_type(Type::String);
        updated.field.push(field);
        let mut extra = updated.clone();
        extra.name = Some("ReceiptDeleted".into());
        set.file[0].message_type.push(extra);
    });
    assert_eq!(breaks, Vec::<String>::new());
}

#[test]
fn removing_a_field_needs_its_number_and_name_reserved() {
    let remove = |set: &mut FileDescriptorSet| {
        message(set, "Receipt")
            .field
            .retain(|f| f.name() != "raw_status");
    };
    assert_eq!(
        breaks_of(remove),
        [
            "receipts.v1.Receipt.raw_status: field 13 removed without reserving both its number and its name"
        ]
    );
    assert_eq!(
        breaks_of(|set| {
            remove(set);
            message(set, "Receipt").reserved_range.push(
                prost_types::descriptor_proto::ReservedRange {
                    start: Some(13),
                    end: Some(14),
                },
            );
        }),
        [
            "receipts.v1.Receipt.raw_status: field 13 removed without reserving both its number and its name"
        ],
        "the name stays free for a field of another meaning, which JSON readers would misread"
    );
    assert_eq!(
        breaks_of(|set| {
            remove(set);
            let receipt = message(set, "Receipt");
            receipt
                .reserved_range
                .push(prost_types::descriptor_proto::ReservedRange {
                    start: Some(13),
                    end: Some(14),
                });
            receipt.reserved_name.push("raw_status".into());
        }),
        Vec::<String>::new()
    );
}

#[test]
fn a_field_keeps_its_number_name_type_cardinality_and_oneof() {
    fn field<'a>(
        set: &'a mut FileDescriptorSet,
        message_name: &str,
        field_name: &str,
    ) -> &'a mut prost_types::FieldDescriptorProto {
        message(set, message_name)
            .field
            .iter_mut()
            .find(|f| f.name() == field_name)
            .unwrap_or_else(|| panic!("no field {message_name}.{field_name}"))
    }
    assert_eq!(
        breaks_of(|set| {
            let f = field(set, "Receipt", "version");
            f.set_type(Type::Uint32);
        }),
        ["receipts.v1.Receipt.version: type changed from uint64 to uint32"]
    );
    assert_eq!(
        breaks_of(|set| {
            let f = field(set, "Receipt", "status");
            f.type_name = Some(".receipts.v1.StatusSource".into());
        }),
        [
            "receipts.v1.Receipt.status: type changed from receipts.v1.DeliveryStatus to receipts.v1.StatusSource"
        ]
    );
    assert_eq!(
        breaks_of(|set| {
            let f = field(set, "Receipt", "sid");
            f.name = Some("receipt_sid".into());
            f.json_name = Some("receiptSid".into());
        }),
        [
            "receipts.v1.Receipt.sid: field 1 renamed to \"receipt_sid\" (the JSON encoding names fields)",
            "receipts.v1.Receipt.sid: JSON name changed from \"sid\" to \"receiptSid\"",
        ]
    );
    assert_eq!(
        breaks_of(|set| {
            let f = field(set, "Receipt", "sid");
            f.set_label(Label::Repeated);
        }),
        ["receipts.v1.Receipt.sid: cardinality changed from singular to repeated"]
    );
    assert_eq!(
        breaks_of(|set| {
            field(set, "Envelope", "status_reported").oneof_index = None;
        }),
        ["receipts.v1.Envelope.status_reported: moved from oneof event to no oneof"]
    );
    // Renumbering is a removal plus an addition.
    assert_eq!(
        breaks_of(|set| {
            let f = field(set, "ReceiptUpdated", "previous_error_code");
            f.number = Some(30);
        }),
        [
            "receipts.v1.ReceiptUpdated.previous_error_code: field 3 removed without reserving both its number and its name"
        ]
    );
}

#[test]
fn reserved_numbers_and_names_are_not_reused() {
    let mut baseline = current();
    let receipt = message(&mut baseline, "Receipt");
    receipt
        .reserved_range
        .push(prost_types::descriptor_proto::ReservedRange {
            start: Some(40),
            end: Some(42),
        });
    receipt.reserved_name.push("legacy_status".into());
    let mut changed = baseline.clone();
    let receipt = message(&mut changed, "Receipt");
    let mut reuse = receipt.field[0].clone();
    reuse.number = Some(41);
    reuse.name = Some("legacy_status".into());
    reuse.json_name = Some("legacyStatus".into());
    receipt.field.push(reuse);
    let breaks: Vec<String> = breaking_changes(&baseline, &changed)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        breaks,
        [
            "receipts.v1.Receipt.legacy_status: uses field number 41, reserved in the baseline",
            "receipts.v1.Receipt.legacy_status: uses a field name reserved in the baseline",
        ]
    );
}

#[test]
fn enums_messages_and_methods_stay() {
    assert_eq!(
        breaks_of(|set| {
            let events = set
                .file
                .iter_mut()
                .find(|f| f.name().ends_with("events.proto"))
                .unwrap();
            let status = events
                .enum_type
                .iter_mut()
                .find(|e| e.name() == "DeliveryStatus")
                .unwrap();
            status.value.retain(|v| v.name() != "DELIVERY_STATUS_READ");
            let channel = events
                .enum_type
                .iter_mut()
                .find(|e| e.name() == "Channel")
                .unwrap();
            channel
                .value
                .iter_mut()
                .find(|v| v.number() == 4)
                .unwrap()
                .name = Some("CHANNEL_RCS_BUSINESS".into());
        }),
        [
            "receipts.v1.Channel.CHANNEL_RCS: value 4 renamed to \"CHANNEL_RCS_BUSINESS\" (the JSON encoding names values)",
            "receipts.v1.DeliveryStatus.DELIVERY_STATUS_READ: value 6 removed without reserving both its number and its name",
        ]
    );
    assert_eq!(
        breaks_of(|set| {
            let events = set
                .file
                .iter_mut()
                .find(|f| f.name().ends_with("events.proto"))
                .unwrap();
            events.message_type.retain(|m| m.name() != "ReceiptUpdated");
        }),
        ["receipts.v1.ReceiptUpdated: message removed"]
    );
    assert_eq!(
        breaks_of(|set| {
            let query = set.file.iter_mut().find(|f| !f.service.is_empty()).unwrap();
            let methods = &mut query.service[0].method;
            let watch = methods
                .iter_mut()
                .find(|m| m.name() == "WatchUpdates")
                .unwrap();
            watch.server_streaming = Some(false);
            let get = methods
                .iter_mut()
                .find(|m| m.name() == "GetReceipt")
                .unwrap();
            get.output_type = Some(".receipts.v1.ReceiptUpdated".into());
            methods.retain(|m| m.name() != "GetReceiptTimeline");
        }),
        [
            "receipts.v1.DeliveryQuery.GetReceipt: response type changed from receipts.v1.Receipt to receipts.v1.ReceiptUpdated",
            "receipts.v1.DeliveryQuery.GetReceiptTimeline: method removed",
            "receipts.v1.DeliveryQuery.WatchUpdates: response streaming changed from true to false",
        ]
    );
}
