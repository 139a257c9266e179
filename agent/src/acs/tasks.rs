//! Tasks: what the ACS has to do on a device, kept in the device store until done or given up.
//!
//! A task is queued (by the CLI, a template, a firmware campaign or the control plane), runs in the device's next
//! session (or at once after a Connection Request), and ends `done` or, after [`RetryPolicy::max_attempts`]
//! faults with growing delays between them, `failed`. Its RPC is built here ([`TaskKind::request`]) and its
//! answer judged here ([`TaskKind::judge`]); the session only carries them.

use serde::{Deserialize, Serialize};

use super::cwmp::{self, Body, ParameterValue};

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// GetParameterValues of names or partial paths.
    Get {
        /// Names (a trailing dot asks for a subtree).
        names: Vec<String>,
    },
    /// Re-read a subtree (a GetParameterValues of one partial path).
    Refresh {
        /// The path, such as `Device.WiFi.`.
        path: String,
    },
    /// SetParameterValues.
    Set {
        /// Name, value, xsd type.
        values: Vec<(String, String, String)>,
    },
    /// AddObject.
    AddObject {
        /// Object path ending with a dot.
        object: String,
    },
    /// DeleteObject.
    DeleteObject {
        /// Instance path ending with a dot.
        object: String,
    },
    /// Reboot.
    Reboot,
    /// FactoryReset.
    FactoryReset,
    /// Download (firmware or configuration).
    Download {
        /// `1 Firmware Upgrade Image`, ...
        file_type: String,
        /// URL the CPE fetches.
        url: String,
        /// Size in bytes (0 unknown).
        file_size: u64,
        /// Target file name.
        target_file_name: String,
    },
    /// Upload (configuration or log file).
    Upload {
        /// `1 Vendor Configuration File`, `2 Vendor Log File`.
        file_type: String,
        /// Where the CPE puts it.
        url: String,
    },
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a session.
    Queued,
    /// Its RPC was answered with status 1 or it is a transfer: waiting for TransferComplete / the next boot.
    Waiting,
    /// Finished well.
    Done,
    /// Given up after faults.
    Failed,
}

impl TaskState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Waiting => "waiting",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }

    /// From the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TaskState::Queued,
            "waiting" => TaskState::Waiting,
            "done" => TaskState::Done,
            "failed" => TaskState::Failed,
            _ => return None,
        })
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Id (UUIDv7 text): also the CommandKey / ParameterKey of its RPC.
    pub id: String,
    /// Device id.
    pub device: String,
    /// What to do.
    pub kind: TaskKind,
    /// State.
    pub state: TaskState,
    /// Faults so far.
    pub attempts: u32,
    /// Not before this time (ms since epoch).
    pub next_attempt_ms: i64,
    /// Last fault, `code: string`.
    pub last_error: Option<String>,
    /// When queued.
    pub created_ms: i64,
}

/// How faulting tasks are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a task is failed.
    pub max_attempts: u32,
    /// First delay, ms; doubles after each fault.
    pub backoff_ms: i64,
    /// Longest delay, ms.
    pub backoff_max_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_ms: 60_000,
            backoff_max_ms: 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1` after `attempts` faults.
    pub fn delay_ms(&self, attempts: u32) -> i64 {
        let shift = attempts.saturating_sub(1).min(30);
        self.backoff_ms
            .saturating_mul(1 << shift)
            .min(self.backoff_max_ms)
    }
}

/// How a task's RPC was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done; the parameters read or written.
    Done(Vec<ParameterValue>),
    /// Accepted, completion comes later (TransferComplete, the reboot's Inform).
    Waiting,
    /// A CWMP fault.
    Fault(u32, String),
}

impl TaskKind {
    /// The RPC that performs the task; `key` becomes its CommandKey or ParameterKey.
    pub fn request(&self, key: &str) -> Body {
        match self {
            TaskKind::Get { names } => Body::GetParameterValues(names.clone()),
            TaskKind::Refresh { path } => Body::GetParameterValues(vec![path.clone()]),
            TaskKind::Set { values } => Body::SetParameterValues {
                list: values
                    .iter()
                    .map(|(n, v, t)| ParameterValue {
                        name: n.clone(),
                        value: v.clone(),
                        xsd_type: t.clone(),
                    })
                    .collect(),
                parameter_key: key.to_owned(),
            },
            TaskKind::AddObject { object } => Body::AddObject {
                object_name: object.clone(),
                parameter_key: key.to_owned(),
            },
            TaskKind::DeleteObject { object } => Body::DeleteObject {
                object_name: object.clone(),
                parameter_key: key.to_owned(),
            },
            TaskKind::Reboot => Body::Reboot {
                command_key: key.to_owned(),
            },
            TaskKind::FactoryReset => Body::FactoryReset,
            TaskKind::Download {
                file_type,
                url,
                file_size,
                target_file_name,
            } => Body::Download(cwmp::Download {
                command_key: key.to_owned(),
                file_type: file_type.clone(),
                url: url.clone(),
                file_size: *file_size,
                target_file_name: target_file_name.clone(),
                ..Default::default()
            }),
            TaskKind::Upload { file_type, url } => Body::Upload(cwmp::Upload {
                command_key: key.to_owned(),
                file_type: file_type.clone(),
                url: url.clone(),
                ..Default::default()
            }),
        }
    }

    /// Short name for logs and results (`reboot`, `set`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Get { .. } => "get",
            TaskKind::Refresh { .. } => "refresh",
            TaskKind::Set { .. } => "set",
            TaskKind::AddObject { .. } => "add_object",
            TaskKind::DeleteObject { .. } => "delete_object",
            TaskKind::Reboot => "reboot",
            TaskKind::FactoryReset => "factory_reset",
            TaskKind::Download { .. } => "download",
            TaskKind::Upload { .. } => "upload",
        }
    }

    /// Judges the CPE's answer to [`TaskKind::request`].
    pub fn judge(&self, answer: &Body) -> Verdict {
        match (self, answer) {
            (_, Body::Fault(f)) => {
                let mut msg = f.string.clone();
                for p in &f.set_parameter_values {
                    msg.push_str(&format!("; {}: {} {}", p.parameter_name, p.code, p.string));
                }
                Verdict::Fault(f.code.code(), msg)
            }
            (
                TaskKind::Get { .. } | TaskKind::Refresh { .. },
                Body::GetParameterValuesResponse(v),
            ) => Verdict::Done(v.clone()),
            (TaskKind::Set { values }, Body::SetParameterValuesResponse { .. }) => Verdict::Done(
                values
                    .iter()
                    .map(|(n, v, t)| ParameterValue {
                        name: n.clone(),
                        value: v.clone(),
                        xsd_type: t.clone(),
                    })
                    .collect(),
            ),
            (
                TaskKind::AddObject { object },
                Body::AddObjectResponse {
                    instance_number, ..
                },
            ) => Verdict::Done(vec![ParameterValue::string(
                format!("{object}{instance_number}."),
                "",
            )]),
            (TaskKind::DeleteObject { .. }, Body::DeleteObjectResponse { .. })
            | (TaskKind::Reboot, Body::RebootResponse)
            | (TaskKind::FactoryReset, Body::FactoryResetResponse) => Verdict::Done(Vec::new()),
            (TaskKind::Download { .. }, Body::DownloadResponse(r))
            | (TaskKind::Upload { .. }, Body::UploadResponse(r)) => {
                if r.status == 0 {
                    Verdict::Done(Vec::new())
                } else {
                    Verdict::Waiting
                }
            }
            (_, other) => Verdict::Fault(
                8003,
                format!(
                    "unexpected answer {} to {}",
                    other.method_name(),
                    self.name()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_ms: 1_000,
            backoff_max_ms: 5_000,
        };
        assert_eq!(
            [1, 2, 3, 4].map(|a| p.delay_ms(a)),
            [1_000, 2_000, 4_000, 5_000]
        );
    }

    #[test]
    fn answers_are_judged() {
        let set = TaskKind::Set {
            values: vec![("A.B".into(), "1".into(), "xsd:string".into())],
        };
        assert!(matches!(
            set.judge(&Body::SetParameterValuesResponse { status: 0 }),
            Verdict::Done(v) if v.len() == 1
        ));
        assert!(matches!(
            set.judge(&Body::RebootResponse),
            Verdict::Fault(8003, _)
        ));
        let dl = TaskKind::Download {
            file_type: "1 Firmware Upgrade Image".into(),
            url: "http://x".into(),
            file_size: 0,
            target_file_name: String::new(),
        };
        assert_eq!(
            dl.judge(&Body::DownloadResponse(cwmp::TransferResponse {
                status: 1,
                ..Default::default()
            })),
            Verdict::Waiting
        );
    }
}
