//! Wire compatibility of the proto files with a released descriptor set.
//!
//! Records written by a release stay on Kafka (compacted changelogs and `webhook-configs` for
//! ever), and consumers built against a release keep reading what newer versions publish, so a
//! change to `proto/` must not change what existing bytes mean, in either encoding the topics
//! carry: protobuf and the proto3 JSON mapping (`content-type: application/json`). Hence, for
//! everything the baseline declares:
//! - messages, enums, services and methods stay;
//! - a field keeps its number, name, JSON name, type (message and enum types by full name),
//!   cardinality (repeated or not) and oneof, or is removed with both its number and its name
//!   reserved;
//! - an enum value keeps its number and name, or is removed with both reserved;
//! - a reserved field number or name is not used again;
//! - a method keeps its request and response types and their streaming.
//!
//! Adding messages, fields, enum values, methods and services is always allowed. `proto3
//! optional` may be added to or removed from a field: it changes presence tracking, not the bytes.

use std::collections::BTreeMap;
use std::fmt;

use prost_types::field_descriptor_proto::Label;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

/// One incompatible change, naming the element it concerns by its full protobuf name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub element: String,
    pub problem: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.element, self.problem)
    }
}

/// Every incompatible change from `baseline` to `current`, in a stable order.
pub fn breaking_changes(baseline: &FileDescriptorSet, current: &FileDescriptorSet) -> Vec<Break> {
    let (old, new) = (Index::of(baseline), Index::of(current));
    let mut breaks = Vec::new();
    let mut report = |element: &str, problem: String| {
        breaks.push(Break {
            element: element.to_owned(),
            problem,
        })
    };

    for (name, old_message) in &old.messages {
        match new.messages.get(name) {
            None => report(name, "message removed".into()),
            Some(new_message) => compare_messages(name, old_message, new_message, &mut report),
        }
    }
    for (name, old_enum) in &old.enums {
        match new.enums.get(name) {
            None => report(name, "enum removed".into()),
            Some(new_enum) => compare_enums(name, old_enum, new_enum, &mut report),
        }
    }
    for (name, old_service) in &old.services {
        match new.services.get(name) {
            None => report(name, "service removed".into()),
            Some(new_service) => compare_services(name, old_service, new_service, &mut report),
        }
    }
    breaks
}

/// Every message, enum and service of a set by full name (`receipts.v1.Receipt`), nested ones
/// included.
struct Index<'a> {
    messages: BTreeMap<String, &'a DescriptorProto>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
    services: BTreeMap<String, &'a ServiceDescriptorProto>,
}

impl<'a> Index<'a> {
    fn of(set: &'a FileDescriptorSet) -> Self {
        let mut index = Index {
            messages: BTreeMap::new(),
            enums: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                index.add_message(package, message);
            }
            for enumeration in &file.enum_type {
                index
                    .enums
                    .insert(qualify(package, enumeration.name()), enumeration);
            }
            for service in &file.service {
                index
                    .services
                    .insert(qualify(package, service.name()), service);
            }
        }
        index
    }

    fn add_message(&mut self, scope: &str, message: &'a DescriptorProto) {
        let name = qualify(scope, message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for enumeration in &message.enum_type {
            self.enums
                .insert(qualify(&name, enumeration.name()), enumeration);
        }
        self.messages.insert(name, message);
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn compare_messages(
    name: &str,
    old: &DescriptorProto,
    new: &DescriptorProto,
    report: &mut impl FnMut(&str, String),
) {
    for old_field in &old.field {
        let element = format!("{name}.{}", old_field.name());
        let number = old_field.number();
        match new.field.iter().find(|f| f.number() == number) {
            Some(new_field) => compare_fields(&element, old, old_field, new, new_field, report),
            None => {
                let number_reserved = new
                    .reserved_range
                    .iter()
                    .any(|r| (r.start()..r.end()).contains(&number));
                let name_reserved = new.reserved_name.iter().any(|n| n == old_field.name());
                if !(number_reserved && name_reserved) {
                    report(
                        &element,
                        format!(
                            "field {number} removed without reserving both its number and its name"
                        ),
                    );
                }
            }
        }
    }
    for new_field in &new.field {
        let number = new_field.number();
        let reused_number = old
            .reserved_range
            .iter()
            .any(|r| (r.start()..r.end()).contains(&number));
        if reused_number {
            report(
                &format!("{name}.{}", new_field.name()),
                format!("uses field number {number}, reserved in the baseline"),
            );
        }
        if old.reserved_name.iter().any(|n| n == new_field.name()) {
            report(
                &format!("{name}.{}", new_field.name()),
                "uses a field name reserved in the baseline".into(),
            );
        }
    }
}

fn compare_fields(
    element: &str,
    old_message: &DescriptorProto,
    old: &FieldDescriptorProto,
    new_message: &DescriptorProto,
    new: &FieldDescriptorProto,
    report: &mut impl FnMut(&str, String),
) {
    let number = old.number();
    if old.name() != new.name() {
        report(
            element,
            format!(
                "field {number} renamed to {:?} (the JSON encoding names fields)",
                new.name()
            ),
        );
    }
    if old.json_name() != new.json_name() {
        report(
            element,
            format!(
                "JSON name changed from {:?} to {:?}",
                old.json_name(),
                new.json_name()
            ),
        );
    }
    if old.r#type() != new.r#type() || old.type_name() != new.type_name() {
        report(
            element,
            format!("type changed from {} to {}", type_of(old), type_of(new)),
        );
    }
    let repeated = |f: &FieldDescriptorProto| f.label() == Label::Repeated;
    if repeated(old) != repeated(new) {
        report(
            element,
            format!(
                "cardinality changed from {} to {}",
                cardinality(old),
                cardinality(new)
            ),
        );
    }
    let (old_oneof, new_oneof) = (oneof_of(old_message, old), oneof_of(new_message, new));
    if old_oneof != new_oneof {
        report(
            element,
            format!(
                "moved from {} to {}",
                describe_oneof(old_oneof),
                describe_oneof(new_oneof)
            ),
        );
    }
}

/// The real oneof a field belongs to; the synthetic oneof of a `proto3 optional` field is none.
fn oneof_of<'a>(message: &'a DescriptorProto, field: &FieldDescriptorProto) -> Option<&'a str> {
    if field.proto3_optional() {
        return None;
    }
    let index = usize::try_from(field.oneof_index?).ok()?;
    message.oneof_decl.get(index).map(|oneof| oneof.name())
}

fn describe_oneof(oneof: Option<&str>) -> String {
    match oneof {
        Some(name) => format!("oneof {name}"),
        None => "no oneof".into(),
    }
}

fn type_of(field: &FieldDescriptorProto) -> String {
    match field.type_name() {
        "" => format!("{:?}", field.r#type()).to_lowercase(),
        name => name.trim_start_matches('.').to_owned(),
    }
}

fn cardinality(field: &FieldDescriptorProto) -> &'static str {
    if field.label() == Label::Repeated {
        "repeated"
    } else {
        "singular"
    }
}

fn compare_enums(
    name: &str,
    old: &EnumDescriptorProto,
    new: &EnumDescriptorProto,
    report: &mut impl FnMut(&str, String),
) {
    for old_value in &old.value {
        let number = old_value.number();
        let element = format!("{name}.{}", old_value.name());
        match new.value.iter().find(|v| v.number() == number) {
            // Aliases (allow_alias) may add names for a number; the old name must stay among them.
            Some(_)
                if new
                    .value
                    .iter()
                    .any(|v| v.number() == number && v.name() == old_value.name()) => {}
            Some(new_value) => report(
                &element,
                format!(
                    "value {number} renamed to {:?} (the JSON encoding names values)",
                    new_value.name()
                ),
            ),
            None => {
                let number_reserved = new
                    .reserved_range
                    .iter()
                    .any(|r| (r.start()..=r.end()).contains(&number));
                let name_reserved = new.reserved_name.iter().any(|n| n == old_value.name());
                if !(number_reserved && name_reserved) {
                    report(
                        &element,
                        format!(
                            "value {number} removed without reserving both its number and its name"
                        ),
                    );
                }
            }
        }
    }
}

fn compare_services(
    name: &str,
    old: &ServiceDescriptorProto,
    new: &ServiceDescriptorProto,
    report: &mut impl FnMut(&str, String),
) {
    for old_method in &old.method {
        let element = format!("{name}.{}", old_method.name());
        let Some(new_method) = new.method.iter().find(|m| m.name() == old_method.name()) else {
            report(&element, "method removed".into());
            continue;
        };
        for (what, old_type, new_type, old_streaming, new_streaming) in [
            (
                "request",
                old_method.input_type(),
                new_method.input_type(),
                old_method.client_streaming(),
                new_method.client_streaming(),
            ),
            (
                "response",
                old_method.output_type(),
                new_method.output_type(),
                old_method.server_streaming(),
                new_method.server_streaming(),
            ),
        ] {
            if old_type != new_type {
                report(
                    &element,
                    format!(
                        "{what} type changed from {} to {}",
                        old_type.trim_start_matches('.'),
                        new_type.trim_start_matches('.')
                    ),
                );
            }
            if old_streaming != new_streaming {
                report(
                    &element,
                    format!("{what} streaming changed from {old_streaming} to {new_streaming}"),
                );
            }
        }
    }
}
