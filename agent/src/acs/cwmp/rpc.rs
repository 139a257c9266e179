//! The RPCs of CWMP as Rust values, and their mapping to and from SOAP body elements.

use super::CwmpError;
use super::fault::{Fault, FaultCode, SetParameterValuesFault};
use super::xml::{Element, XmlOut};

/// `DeviceIdStruct` of an Inform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceId {
    /// Manufacturer name.
    pub manufacturer: String,
    /// IEEE OUI, six hex digits.
    pub oui: String,
    /// Product class (may be empty or contain spaces).
    pub product_class: String,
    /// Serial number.
    pub serial_number: String,
}

/// `EventStruct` of an Inform, such as `0 BOOTSTRAP`, `1 BOOT`, `2 PERIODIC`, `7 TRANSFER COMPLETE`, `M Reboot`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventStruct {
    /// Event code.
    pub code: String,
    /// Command key, for `M ...` events.
    pub command_key: String,
}

/// `ParameterValueStruct`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParameterValue {
    /// Full parameter name.
    pub name: String,
    /// Value as text.
    pub value: String,
    /// `xsi:type`, such as `xsd:string` (what the CPE sent; `xsd:string` when it sent none).
    pub xsd_type: String,
}

impl ParameterValue {
    /// A parameter of type `xsd:string`.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            xsd_type: "xsd:string".into(),
        }
    }
}

/// The Inform RPC (CPE to ACS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inform {
    /// Who the CPE is.
    pub device_id: DeviceId,
    /// Why it informs.
    pub events: Vec<EventStruct>,
    /// Most envelopes the CPE accepts in one HTTP response (CWMP 1.0 allows 1; 0 means no limit in later ones).
    pub max_envelopes: u32,
    /// CPE clock.
    pub current_time: String,
    /// Retries of this Inform so far.
    pub retry_count: u32,
    /// Parameters the CPE reports (forced inform and value changes).
    pub parameters: Vec<ParameterValue>,
}

/// `ParameterInfoStruct` of GetParameterNamesResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParameterInfo {
    /// Parameter or object name (objects end with a dot).
    pub name: String,
    /// Whether it is writable.
    pub writable: bool,
}

/// `ParameterAttributeStruct` of GetParameterAttributesResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParameterAttribute {
    /// Parameter name.
    pub name: String,
    /// 0 off, 1 passive, 2 active.
    pub notification: u32,
    /// Entities that may write it besides the ACS (`Subscriber`).
    pub access_list: Vec<String>,
}

/// `SetParameterAttributesStruct`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetParameterAttribute {
    /// Parameter name (or partial path).
    pub name: String,
    /// Whether to change the notification.
    pub notification_change: bool,
    /// The new notification.
    pub notification: u32,
    /// Whether to change the access list.
    pub access_list_change: bool,
    /// The new access list.
    pub access_list: Vec<String>,
}

/// The Download RPC (ACS to CPE).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Download {
    /// Echoed in TransferComplete.
    pub command_key: String,
    /// `1 Firmware Upgrade Image`, `3 Vendor Configuration File`, ...
    pub file_type: String,
    /// Where the CPE fetches the file.
    pub url: String,
    /// File server user name.
    pub username: String,
    /// File server password.
    pub password: String,
    /// Size in bytes.
    pub file_size: u64,
    /// Target file name.
    pub target_file_name: String,
    /// Seconds to wait before starting.
    pub delay_seconds: u32,
    /// Where to go on success (usually empty).
    pub success_url: String,
    /// Where to go on failure (usually empty).
    pub failure_url: String,
}

/// The Upload RPC (ACS to CPE).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Upload {
    /// Echoed in TransferComplete.
    pub command_key: String,
    /// `1 Vendor Configuration File`, `2 Vendor Log File`, ...
    pub file_type: String,
    /// Where the CPE puts the file.
    pub url: String,
    /// File server user name.
    pub username: String,
    /// File server password.
    pub password: String,
    /// Seconds to wait before starting.
    pub delay_seconds: u32,
}

/// Download or Upload response: 0 done, 1 will be done later (TransferComplete follows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferResponse {
    /// 0 or 1.
    pub status: u32,
    /// When it started.
    pub start_time: String,
    /// When it completed.
    pub complete_time: String,
}

/// The TransferComplete RPC (CPE to ACS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferComplete {
    /// The Download/Upload command key.
    pub command_key: String,
    /// The failure, `None` for FaultCode 0.
    pub fault: Option<(u32, String)>,
    /// When it started.
    pub start_time: String,
    /// When it completed.
    pub complete_time: String,
}

/// The AutonomousTransferComplete RPC (CPE to ACS): a transfer the ACS did not ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutonomousTransferComplete {
    /// URL on which the transfer was announced.
    pub announce_url: String,
    /// URL transferred.
    pub transfer_url: String,
    /// Download (true) or upload.
    pub is_download: bool,
    /// File type.
    pub file_type: String,
    /// Size.
    pub file_size: u64,
    /// Target file name.
    pub target_file_name: String,
    /// The failure, `None` for FaultCode 0.
    pub fault: Option<(u32, String)>,
    /// When it started.
    pub start_time: String,
    /// When it completed.
    pub complete_time: String,
}

/// Every message of a CWMP session.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Body {
    Inform(Inform),
    InformResponse {
        max_envelopes: u32,
    },
    GetRPCMethods,
    GetRPCMethodsResponse(Vec<String>),
    TransferComplete(TransferComplete),
    TransferCompleteResponse,
    AutonomousTransferComplete(AutonomousTransferComplete),
    AutonomousTransferCompleteResponse,
    RequestDownload {
        file_type: String,
        args: Vec<(String, String)>,
    },
    RequestDownloadResponse,
    GetParameterNames {
        path: String,
        next_level: bool,
    },
    GetParameterNamesResponse(Vec<ParameterInfo>),
    GetParameterValues(Vec<String>),
    GetParameterValuesResponse(Vec<ParameterValue>),
    SetParameterValues {
        list: Vec<ParameterValue>,
        parameter_key: String,
    },
    SetParameterValuesResponse {
        status: u32,
    },
    GetParameterAttributes(Vec<String>),
    GetParameterAttributesResponse(Vec<ParameterAttribute>),
    SetParameterAttributes(Vec<SetParameterAttribute>),
    SetParameterAttributesResponse,
    AddObject {
        object_name: String,
        parameter_key: String,
    },
    AddObjectResponse {
        instance_number: u32,
        status: u32,
    },
    DeleteObject {
        object_name: String,
        parameter_key: String,
    },
    DeleteObjectResponse {
        status: u32,
    },
    Reboot {
        command_key: String,
    },
    RebootResponse,
    FactoryReset,
    FactoryResetResponse,
    Download(Download),
    DownloadResponse(TransferResponse),
    Upload(Upload),
    UploadResponse(TransferResponse),
    ScheduleInform {
        delay_seconds: u32,
        command_key: String,
    },
    ScheduleInformResponse,
    /// A SOAP fault carrying a CWMP fault.
    Fault(Fault),
}

impl Body {
    /// The element name of the RPC (`Fault` for a SOAP fault).
    pub fn method_name(&self) -> &'static str {
        match self {
            Body::Inform(_) => "Inform",
            Body::InformResponse { .. } => "InformResponse",
            Body::GetRPCMethods => "GetRPCMethods",
            Body::GetRPCMethodsResponse(_) => "GetRPCMethodsResponse",
            Body::TransferComplete(_) => "TransferComplete",
            Body::TransferCompleteResponse => "TransferCompleteResponse",
            Body::AutonomousTransferComplete(_) => "AutonomousTransferComplete",
            Body::AutonomousTransferCompleteResponse => "AutonomousTransferCompleteResponse",
            Body::RequestDownload { .. } => "RequestDownload",
            Body::RequestDownloadResponse => "RequestDownloadResponse",
            Body::GetParameterNames { .. } => "GetParameterNames",
            Body::GetParameterNamesResponse(_) => "GetParameterNamesResponse",
            Body::GetParameterValues(_) => "GetParameterValues",
            Body::GetParameterValuesResponse(_) => "GetParameterValuesResponse",
            Body::SetParameterValues { .. } => "SetParameterValues",
            Body::SetParameterValuesResponse { .. } => "SetParameterValuesResponse",
            Body::GetParameterAttributes(_) => "GetParameterAttributes",
            Body::GetParameterAttributesResponse(_) => "GetParameterAttributesResponse",
            Body::SetParameterAttributes(_) => "SetParameterAttributes",
            Body::SetParameterAttributesResponse => "SetParameterAttributesResponse",
            Body::AddObject { .. } => "AddObject",
            Body::AddObjectResponse { .. } => "AddObjectResponse",
            Body::DeleteObject { .. } => "DeleteObject",
            Body::DeleteObjectResponse { .. } => "DeleteObjectResponse",
            Body::Reboot { .. } => "Reboot",
            Body::RebootResponse => "RebootResponse",
            Body::FactoryReset => "FactoryReset",
            Body::FactoryResetResponse => "FactoryResetResponse",
            Body::Download(_) => "Download",
            Body::DownloadResponse(_) => "DownloadResponse",
            Body::Upload(_) => "Upload",
            Body::UploadResponse(_) => "UploadResponse",
            Body::ScheduleInform { .. } => "ScheduleInform",
            Body::ScheduleInformResponse => "ScheduleInformResponse",
            Body::Fault(_) => "Fault",
        }
    }

    pub(super) fn from_element(el: &Element<'_>) -> Result<Body, CwmpError> {
        Ok(match el.name.as_ref() {
            "Inform" => Body::Inform(parse_inform(el)?),
            "InformResponse" => Body::InformResponse {
                max_envelopes: el.u32_of("MaxEnvelopes").unwrap_or(1),
            },
            "GetRPCMethods" => Body::GetRPCMethods,
            "GetRPCMethodsResponse" => {
                Body::GetRPCMethodsResponse(strings(list(el, "MethodList")?))
            }
            "TransferComplete" => Body::TransferComplete(TransferComplete {
                command_key: el.text_or_empty("CommandKey").to_owned(),
                fault: fault_struct(el)?,
                start_time: el.text_or_empty("StartTime").to_owned(),
                complete_time: el.text_or_empty("CompleteTime").to_owned(),
            }),
            "TransferCompleteResponse" => Body::TransferCompleteResponse,
            "AutonomousTransferComplete" => {
                Body::AutonomousTransferComplete(AutonomousTransferComplete {
                    announce_url: el.text_or_empty("AnnounceURL").to_owned(),
                    transfer_url: el.text_or_empty("TransferURL").to_owned(),
                    is_download: el.bool_of("IsDownload").unwrap_or(true),
                    file_type: el.text_or_empty("FileType").to_owned(),
                    file_size: u64_or_zero(el, "FileSize")?,
                    target_file_name: el.text_or_empty("TargetFileName").to_owned(),
                    fault: fault_struct(el)?,
                    start_time: el.text_or_empty("StartTime").to_owned(),
                    complete_time: el.text_or_empty("CompleteTime").to_owned(),
                })
            }
            "AutonomousTransferCompleteResponse" => Body::AutonomousTransferCompleteResponse,
            "RequestDownload" => Body::RequestDownload {
                file_type: el.text_of("FileType")?.to_owned(),
                args: match el.child("FileTypeArg") {
                    Some(a) => a
                        .children
                        .iter()
                        .map(|s| {
                            (
                                s.text_or_empty("Name").to_owned(),
                                s.text_or_empty("Value").to_owned(),
                            )
                        })
                        .collect(),
                    None => Vec::new(),
                },
            },
            "RequestDownloadResponse" => Body::RequestDownloadResponse,
            "GetParameterNames" => Body::GetParameterNames {
                path: el.text_or_empty("ParameterPath").to_owned(),
                next_level: el.bool_of("NextLevel")?,
            },
            "GetParameterNamesResponse" => Body::GetParameterNamesResponse(
                list(el, "ParameterList")?
                    .iter()
                    .map(|p| {
                        Ok(ParameterInfo {
                            name: p.text_of("Name")?.to_owned(),
                            writable: p.bool_of("Writable")?,
                        })
                    })
                    .collect::<Result<_, CwmpError>>()?,
            ),
            "GetParameterValues" => Body::GetParameterValues(strings(list(el, "ParameterNames")?)),
            "GetParameterValuesResponse" => {
                Body::GetParameterValuesResponse(parameter_values(list(el, "ParameterList")?)?)
            }
            "SetParameterValues" => Body::SetParameterValues {
                list: parameter_values(list(el, "ParameterList")?)?,
                parameter_key: el.text_or_empty("ParameterKey").to_owned(),
            },
            "SetParameterValuesResponse" => Body::SetParameterValuesResponse {
                status: el.u32_of("Status")?,
            },
            "GetParameterAttributes" => {
                Body::GetParameterAttributes(strings(list(el, "ParameterNames")?))
            }
            "GetParameterAttributesResponse" => Body::GetParameterAttributesResponse(
                list(el, "ParameterList")?
                    .iter()
                    .map(|p| {
                        Ok(ParameterAttribute {
                            name: p.text_of("Name")?.to_owned(),
                            notification: p.u32_of("Notification")?,
                            access_list: p
                                .child("AccessList")
                                .map(|a| strings(&a.children))
                                .unwrap_or_default(),
                        })
                    })
                    .collect::<Result<_, CwmpError>>()?,
            ),
            "SetParameterAttributes" => Body::SetParameterAttributes(
                list(el, "ParameterList")?
                    .iter()
                    .map(|p| {
                        Ok(SetParameterAttribute {
                            name: p.text_of("Name")?.to_owned(),
                            notification_change: p.bool_of("NotificationChange")?,
                            notification: p.u32_of("Notification")?,
                            access_list_change: p.bool_of("AccessListChange")?,
                            access_list: p
                                .child("AccessList")
                                .map(|a| strings(&a.children))
                                .unwrap_or_default(),
                        })
                    })
                    .collect::<Result<_, CwmpError>>()?,
            ),
            "SetParameterAttributesResponse" => Body::SetParameterAttributesResponse,
            "AddObject" => Body::AddObject {
                object_name: el.text_of("ObjectName")?.to_owned(),
                parameter_key: el.text_or_empty("ParameterKey").to_owned(),
            },
            "AddObjectResponse" => Body::AddObjectResponse {
                instance_number: el.u32_of("InstanceNumber")?,
                status: el.u32_of("Status")?,
            },
            "DeleteObject" => Body::DeleteObject {
                object_name: el.text_of("ObjectName")?.to_owned(),
                parameter_key: el.text_or_empty("ParameterKey").to_owned(),
            },
            "DeleteObjectResponse" => Body::DeleteObjectResponse {
                status: el.u32_of("Status")?,
            },
            "Reboot" => Body::Reboot {
                command_key: el.text_or_empty("CommandKey").to_owned(),
            },
            "RebootResponse" => Body::RebootResponse,
            "FactoryReset" => Body::FactoryReset,
            "FactoryResetResponse" => Body::FactoryResetResponse,
            "Download" => Body::Download(Download {
                command_key: el.text_or_empty("CommandKey").to_owned(),
                file_type: el.text_of("FileType")?.to_owned(),
                url: el.text_of("URL")?.to_owned(),
                username: el.text_or_empty("Username").to_owned(),
                password: el.text_or_empty("Password").to_owned(),
                file_size: u64_or_zero(el, "FileSize")?,
                target_file_name: el.text_or_empty("TargetFileName").to_owned(),
                delay_seconds: u32_or_zero(el, "DelaySeconds")?,
                success_url: el.text_or_empty("SuccessURL").to_owned(),
                failure_url: el.text_or_empty("FailureURL").to_owned(),
            }),
            "DownloadResponse" => Body::DownloadResponse(transfer_response(el)?),
            "Upload" => Body::Upload(Upload {
                command_key: el.text_or_empty("CommandKey").to_owned(),
                file_type: el.text_of("FileType")?.to_owned(),
                url: el.text_of("URL")?.to_owned(),
                username: el.text_or_empty("Username").to_owned(),
                password: el.text_or_empty("Password").to_owned(),
                delay_seconds: u32_or_zero(el, "DelaySeconds")?,
            }),
            "UploadResponse" => Body::UploadResponse(transfer_response(el)?),
            "ScheduleInform" => Body::ScheduleInform {
                delay_seconds: el.u32_of("DelaySeconds")?,
                command_key: el.text_or_empty("CommandKey").to_owned(),
            },
            "ScheduleInformResponse" => Body::ScheduleInformResponse,
            "Fault" => Body::Fault(parse_fault(el)?),
            other => {
                return Err(CwmpError::UnknownMethod(other.chars().take(64).collect()));
            }
        })
    }

    pub(super) fn write(&self, out: &mut XmlOut) {
        let tag = self.method_name();
        if let Body::Fault(f) = self {
            write_fault(out, f);
            return;
        }
        out.open_cwmp(tag);
        match self {
            Body::Inform(i) => {
                out.open("DeviceId", &[]);
                out.leaf("Manufacturer", &i.device_id.manufacturer);
                out.leaf("OUI", &i.device_id.oui);
                out.leaf("ProductClass", &i.device_id.product_class);
                out.leaf("SerialNumber", &i.device_id.serial_number);
                out.close("DeviceId");
                let n = format!("cwmp:EventStruct[{}]", i.events.len());
                out.open("Event", &[("soap-enc:arrayType", &n)]);
                for e in &i.events {
                    out.open("EventStruct", &[]);
                    out.leaf("EventCode", &e.code);
                    out.leaf("CommandKey", &e.command_key);
                    out.close("EventStruct");
                }
                out.close("Event");
                out.leaf("MaxEnvelopes", &i.max_envelopes.to_string());
                out.leaf("CurrentTime", &i.current_time);
                out.leaf("RetryCount", &i.retry_count.to_string());
                write_values(out, "ParameterList", &i.parameters);
            }
            Body::InformResponse { max_envelopes } => {
                out.leaf("MaxEnvelopes", &max_envelopes.to_string());
            }
            Body::GetRPCMethodsResponse(m) => write_strings(out, "MethodList", m),
            Body::TransferComplete(t) => {
                out.leaf("CommandKey", &t.command_key);
                write_fault_struct(out, &t.fault);
                out.leaf("StartTime", &t.start_time);
                out.leaf("CompleteTime", &t.complete_time);
            }
            Body::AutonomousTransferComplete(t) => {
                out.leaf("AnnounceURL", &t.announce_url);
                out.leaf("TransferURL", &t.transfer_url);
                out.leaf("IsDownload", if t.is_download { "1" } else { "0" });
                out.leaf("FileType", &t.file_type);
                out.leaf("FileSize", &t.file_size.to_string());
                out.leaf("TargetFileName", &t.target_file_name);
                write_fault_struct(out, &t.fault);
                out.leaf("StartTime", &t.start_time);
                out.leaf("CompleteTime", &t.complete_time);
            }
            Body::RequestDownload { file_type, args } => {
                out.leaf("FileType", file_type);
                let n = format!("cwmp:ArgStruct[{}]", args.len());
                out.open("FileTypeArg", &[("soap-enc:arrayType", &n)]);
                for (k, v) in args {
                    out.open("ArgStruct", &[]);
                    out.leaf("Name", k);
                    out.leaf("Value", v);
                    out.close("ArgStruct");
                }
                out.close("FileTypeArg");
            }
            Body::GetParameterNames { path, next_level } => {
                out.leaf("ParameterPath", path);
                out.leaf("NextLevel", if *next_level { "1" } else { "0" });
            }
            Body::GetParameterNamesResponse(list) => {
                let n = format!("cwmp:ParameterInfoStruct[{}]", list.len());
                out.open("ParameterList", &[("soap-enc:arrayType", &n)]);
                for p in list {
                    out.open("ParameterInfoStruct", &[]);
                    out.leaf("Name", &p.name);
                    out.leaf("Writable", if p.writable { "1" } else { "0" });
                    out.close("ParameterInfoStruct");
                }
                out.close("ParameterList");
            }
            Body::GetParameterValues(names) | Body::GetParameterAttributes(names) => {
                write_strings(out, "ParameterNames", names);
            }
            Body::GetParameterValuesResponse(list) => write_values(out, "ParameterList", list),
            Body::SetParameterValues {
                list,
                parameter_key,
            } => {
                write_values(out, "ParameterList", list);
                out.leaf("ParameterKey", parameter_key);
            }
            Body::SetParameterValuesResponse { status } | Body::DeleteObjectResponse { status } => {
                out.leaf("Status", &status.to_string())
            }
            Body::GetParameterAttributesResponse(list) => {
                let n = format!("cwmp:ParameterAttributeStruct[{}]", list.len());
                out.open("ParameterList", &[("soap-enc:arrayType", &n)]);
                for p in list {
                    out.open("ParameterAttributeStruct", &[]);
                    out.leaf("Name", &p.name);
                    out.leaf("Notification", &p.notification.to_string());
                    write_strings(out, "AccessList", &p.access_list);
                    out.close("ParameterAttributeStruct");
                }
                out.close("ParameterList");
            }
            Body::SetParameterAttributes(list) => {
                let n = format!("cwmp:SetParameterAttributesStruct[{}]", list.len());
                out.open("ParameterList", &[("soap-enc:arrayType", &n)]);
                for p in list {
                    out.open("SetParameterAttributesStruct", &[]);
                    out.leaf("Name", &p.name);
                    out.leaf(
                        "NotificationChange",
                        if p.notification_change { "1" } else { "0" },
                    );
                    out.leaf("Notification", &p.notification.to_string());
                    out.leaf(
                        "AccessListChange",
                        if p.access_list_change { "1" } else { "0" },
                    );
                    write_strings(out, "AccessList", &p.access_list);
                    out.close("SetParameterAttributesStruct");
                }
                out.close("ParameterList");
            }
            Body::AddObject {
                object_name,
                parameter_key,
            }
            | Body::DeleteObject {
                object_name,
                parameter_key,
            } => {
                out.leaf("ObjectName", object_name);
                out.leaf("ParameterKey", parameter_key);
            }
            Body::AddObjectResponse {
                instance_number,
                status,
            } => {
                out.leaf("InstanceNumber", &instance_number.to_string());
                out.leaf("Status", &status.to_string());
            }
            Body::Reboot { command_key } => out.leaf("CommandKey", command_key),
            Body::Download(d) => {
                out.leaf("CommandKey", &d.command_key);
                out.leaf("FileType", &d.file_type);
                out.leaf("URL", &d.url);
                out.leaf("Username", &d.username);
                out.leaf("Password", &d.password);
                out.leaf("FileSize", &d.file_size.to_string());
                out.leaf("TargetFileName", &d.target_file_name);
                out.leaf("DelaySeconds", &d.delay_seconds.to_string());
                out.leaf("SuccessURL", &d.success_url);
                out.leaf("FailureURL", &d.failure_url);
            }
            Body::Upload(u) => {
                out.leaf("CommandKey", &u.command_key);
                out.leaf("FileType", &u.file_type);
                out.leaf("URL", &u.url);
                out.leaf("Username", &u.username);
                out.leaf("Password", &u.password);
                out.leaf("DelaySeconds", &u.delay_seconds.to_string());
            }
            Body::DownloadResponse(r) | Body::UploadResponse(r) => {
                out.leaf("Status", &r.status.to_string());
                out.leaf("StartTime", &r.start_time);
                out.leaf("CompleteTime", &r.complete_time);
            }
            Body::ScheduleInform {
                delay_seconds,
                command_key,
            } => {
                out.leaf("DelaySeconds", &delay_seconds.to_string());
                out.leaf("CommandKey", command_key);
            }
            Body::GetRPCMethods
            | Body::TransferCompleteResponse
            | Body::AutonomousTransferCompleteResponse
            | Body::RequestDownloadResponse
            | Body::SetParameterAttributesResponse
            | Body::RebootResponse
            | Body::FactoryReset
            | Body::FactoryResetResponse
            | Body::ScheduleInformResponse
            | Body::Fault(_) => {}
        }
        out.close_cwmp(tag);
    }
}

/// The array element `name` of `el` (its children); an absent array is an error.
fn list<'e, 'd>(el: &'e Element<'d>, name: &str) -> Result<&'e [Element<'d>], CwmpError> {
    el.child(name)
        .map(|l| l.children.as_slice())
        .ok_or_else(|| CwmpError::Missing(format!("{}/{name}", el.name)))
}

fn strings(items: &[Element<'_>]) -> Vec<String> {
    items.iter().map(|s| s.text.trim().to_owned()).collect()
}

fn u32_or_zero(el: &Element<'_>, name: &str) -> Result<u32, CwmpError> {
    match el.child(name) {
        Some(c) if !c.text.trim().is_empty() => el.u32_of(name),
        _ => Ok(0),
    }
}

fn u64_or_zero(el: &Element<'_>, name: &str) -> Result<u64, CwmpError> {
    match el.child(name).map(|c| c.text.trim()) {
        Some(t) if !t.is_empty() => t
            .parse()
            .map_err(|_| CwmpError::Invalid(format!("{}/{name}: {t:?}", el.name))),
        _ => Ok(0),
    }
}

fn parameter_values(items: &[Element<'_>]) -> Result<Vec<ParameterValue>, CwmpError> {
    items
        .iter()
        .map(|p| {
            let value = p
                .child("Value")
                .ok_or_else(|| CwmpError::Missing("ParameterValueStruct/Value".into()))?;
            Ok(ParameterValue {
                name: p.text_of("Name")?.to_owned(),
                // Values are kept as sent: leading and trailing spaces of a string are data.
                value: value.text.as_ref().to_owned(),
                xsd_type: value.attr("type").unwrap_or("xsd:string").to_owned(),
            })
        })
        .collect()
}

fn parse_inform(el: &Element<'_>) -> Result<Inform, CwmpError> {
    let d = el
        .child("DeviceId")
        .ok_or_else(|| CwmpError::Missing("Inform/DeviceId".into()))?;
    let events = list(el, "Event")?
        .iter()
        .map(|e| EventStruct {
            code: e.text_or_empty("EventCode").to_owned(),
            command_key: e.text_or_empty("CommandKey").to_owned(),
        })
        .collect();
    Ok(Inform {
        device_id: DeviceId {
            manufacturer: d.text_or_empty("Manufacturer").to_owned(),
            oui: d.text_of("OUI")?.to_owned(),
            product_class: d.text_or_empty("ProductClass").to_owned(),
            serial_number: d.text_of("SerialNumber")?.to_owned(),
        },
        events,
        max_envelopes: u32_or_zero(el, "MaxEnvelopes")?,
        current_time: el.text_or_empty("CurrentTime").to_owned(),
        retry_count: u32_or_zero(el, "RetryCount")?,
        parameters: match el.child("ParameterList") {
            Some(l) => parameter_values(&l.children)?,
            None => Vec::new(),
        },
    })
}

fn fault_struct(el: &Element<'_>) -> Result<Option<(u32, String)>, CwmpError> {
    let Some(f) = el.child("FaultStruct") else {
        return Ok(None);
    };
    let code = u32_or_zero(f, "FaultCode")?;
    Ok((code != 0).then(|| (code, f.text_or_empty("FaultString").to_owned())))
}

fn transfer_response(el: &Element<'_>) -> Result<TransferResponse, CwmpError> {
    Ok(TransferResponse {
        status: el.u32_of("Status")?,
        start_time: el.text_or_empty("StartTime").to_owned(),
        complete_time: el.text_or_empty("CompleteTime").to_owned(),
    })
}

/// A SOAP `Fault` element: the CWMP fault is in `detail/Fault`.
fn parse_fault(el: &Element<'_>) -> Result<Fault, CwmpError> {
    let Some(f) = el.child("detail").and_then(|d| d.child("Fault")) else {
        // A bare SOAP fault: keep its string, with code 8002/9002 unknown; report as "Internal error".
        let string = el.text_or_empty("faultstring").to_owned();
        return Ok(Fault::with_string(9002, string));
    };
    let code = f.u32_of("FaultCode")?;
    let set_parameter_values = f
        .children_named("SetParameterValuesFault")
        .map(|s| {
            Ok(SetParameterValuesFault {
                parameter_name: s.text_of("ParameterName")?.to_owned(),
                code: s.u32_of("FaultCode")?,
                string: s.text_or_empty("FaultString").to_owned(),
            })
        })
        .collect::<Result<_, CwmpError>>()?;
    Ok(Fault {
        code: FaultCode::from_u32(code),
        string: f.text_or_empty("FaultString").to_owned(),
        set_parameter_values,
    })
}

fn write_fault(out: &mut XmlOut, f: &Fault) {
    out.open("soap-env:Fault", &[]);
    out.leaf("faultcode", f.code.soap_faultcode());
    out.leaf("faultstring", "CWMP fault");
    out.open("detail", &[]);
    out.open("cwmp:Fault", &[]);
    out.leaf("FaultCode", &f.code.code().to_string());
    out.leaf("FaultString", &f.string);
    for s in &f.set_parameter_values {
        out.open("SetParameterValuesFault", &[]);
        out.leaf("ParameterName", &s.parameter_name);
        out.leaf("FaultCode", &s.code.to_string());
        out.leaf("FaultString", &s.string);
        out.close("SetParameterValuesFault");
    }
    out.close("cwmp:Fault");
    out.close("detail");
    out.close("soap-env:Fault");
}

fn write_fault_struct(out: &mut XmlOut, fault: &Option<(u32, String)>) {
    out.open("FaultStruct", &[]);
    match fault {
        Some((code, s)) => {
            out.leaf("FaultCode", &code.to_string());
            out.leaf("FaultString", s);
        }
        None => {
            out.leaf("FaultCode", "0");
            out.leaf("FaultString", "");
        }
    }
    out.close("FaultStruct");
}

fn write_strings(out: &mut XmlOut, name: &str, items: &[String]) {
    let n = format!("xsd:string[{}]", items.len());
    out.open(name, &[("soap-enc:arrayType", &n)]);
    for s in items {
        out.leaf("string", s);
    }
    out.close(name);
}

fn write_values(out: &mut XmlOut, name: &str, items: &[ParameterValue]) {
    let n = format!("cwmp:ParameterValueStruct[{}]", items.len());
    out.open(name, &[("soap-enc:arrayType", &n)]);
    for p in items {
        out.open("ParameterValueStruct", &[]);
        out.leaf("Name", &p.name);
        out.leaf_with("Value", &[("xsi:type", &p.xsd_type)], &p.value);
        out.close("ParameterValueStruct");
    }
    out.close(name);
}
