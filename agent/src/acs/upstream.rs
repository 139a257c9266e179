//! What the ACS reports to the control plane through the outbox: CWMP events, inventory of new or changed
//! devices, parameter changes (never whole trees) and task results. Records only: no I/O here.

use octoisp_shared::{Event, Inventory, Record, Severity, TR069_INFORM_SEEN, Tr069Result};
use uuid::Uuid;

use super::cwmp::{EventStruct, Inform, ParameterValue};

/// Event kinds by CWMP event code; events not listed here (PERIODIC, VALUE CHANGE...) are not reported as events.
fn event_kind(code: &str) -> Option<(&'static str, Severity)> {
    Some(match code {
        "0 BOOTSTRAP" => ("cwmp.bootstrap", Severity::Warning),
        "1 BOOT" => ("cwmp.boot", Severity::Info),
        "7 TRANSFER COMPLETE" => ("cwmp.transfer_complete", Severity::Info),
        "10 AUTONOMOUS TRANSFER COMPLETE" => ("cwmp.autonomous_transfer_complete", Severity::Info),
        "M Reboot" => ("cwmp.reboot", Severity::Info),
        "X OCTOISP DUPLICATE" => ("cwmp.duplicate_session", Severity::Warning),
        _ => return None,
    })
}

/// Records for the events of an Inform.
pub fn inform_events(device: &str, events: &[EventStruct], now_ms: i64) -> Vec<Record> {
    events
        .iter()
        .filter_map(|e| {
            let (kind, severity) = event_kind(&e.code)?;
            Some(Record::Event(Event {
                id: Uuid::now_v7(),
                ts_ms: now_ms,
                device_key: Some(device.to_owned()),
                kind: kind.into(),
                severity,
                message: format!("CPE {device}: {}", e.code),
                attrs: vec![
                    ("event_code".into(), e.code.clone()),
                    ("command_key".into(), e.command_key.clone()),
                ],
            }))
        })
        .collect()
}

/// The inventory record of a device from its Inform.
pub fn inventory(device: &str, inform: &Inform, ip: &str, now_ms: i64) -> Record {
    let find = |suffix: &str| {
        inform
            .parameters
            .iter()
            .find(|p| p.name.ends_with(suffix))
            .map(|p| p.value.clone())
    };
    Record::Inventory(Inventory {
        ts_ms: now_ms,
        device_key: device.to_owned(),
        vendor: Some(inform.device_id.manufacturer.clone()),
        model: Some(inform.device_id.product_class.clone()),
        serial_number: Some(inform.device_id.serial_number.clone()),
        oui: Some(inform.device_id.oui.clone()),
        product_class: Some(inform.device_id.product_class.clone()),
        firmware: find("DeviceInfo.SoftwareVersion"),
        mgmt_ip: Some(ip.to_owned()),
        attrs: find("DeviceInfo.HardwareVersion")
            .map(|h| vec![("hardware_version".to_owned(), h)])
            .unwrap_or_default(),
    })
}

/// A result record: a task's outcome, or (`task` `None`, kind `ParameterChanges`) changed parameters.
pub fn result(
    device: &str,
    task: Option<&str>,
    kind: &str,
    fault: Option<(u32, String)>,
    parameters: &[ParameterValue],
    now_ms: i64,
) -> Record {
    Record::Tr069Result(Tr069Result {
        id: Uuid::now_v7(),
        ts_ms: now_ms,
        device_key: device.to_owned(),
        task_id: task.and_then(|t| Uuid::parse_str(t).ok()),
        kind: kind.to_owned(),
        ok: fault.is_none(),
        fault_code: fault.as_ref().map(|f| f.0),
        fault_string: fault.map(|f| f.1),
        parameters: parameters
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect(),
    })
}

/// The record of an Inform that reported nothing else (a periodic one): the control plane advances the CPE's
/// `last_seen` with it.
pub fn inform_seen(device: &str, now_ms: i64) -> Record {
    result(device, None, TR069_INFORM_SEEN, None, &[], now_ms)
}
