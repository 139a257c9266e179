//! Messages exchanged between an agent and the control plane over QUIC.
//!
//! The encoding is postcard (see [`crate::frame`]): structs are not self-describing, so **any change to a type
//! here that is not appending a new enum variant at the end changes the bytes on the wire** and needs a new
//! protocol version. The golden vectors under `shared/tests/golden/` fail when that happens by accident.
//!
//! Free-form payloads that will evolve often (command arguments, command results and progress) travel as JSON
//! text inside these messages, so that new optional fields need no protocol version.
//!
//! Stream layout (one QUIC connection per agent, ALPN [`ALPN`]):
//! - the agent opens the first bidirectional stream, the *control stream*, and sends [`Message::Hello`]
//!   (or [`Message::Enroll`] when it has no certificate yet); the control plane answers [`Message::Welcome`]
//!   or [`Message::Reject`]. Heartbeats then flow up that stream.
//! - each batch travels on a bidirectional stream of its own: the agent sends one [`Message::Batch`] and finishes
//!   the stream; the control plane answers [`Message::Ack`] only after the PostgreSQL transaction that stored
//!   the batch committed, or [`Message::Nack`].
//! - commands flow down on bidirectional streams opened by the control plane: one [`Message::Command`], answered
//!   by zero or more [`Message::CommandProgress`]. The final result goes into the outbox as
//!   [`Record::CommandResult`], so it survives a disconnect.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::samples::SampleBlock;

/// Oldest protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Newest protocol version this build speaks.
pub const PROTOCOL_VERSION_MAX: u16 = 1;
/// ALPN token of the agent protocol.
pub const ALPN: &[u8] = b"octoisp/1";
/// Server name the agent always asks for (SNI) and that every control plane certificate carries, so that the
/// agent verifies the control plane against the enrolled CA whatever address it dials.
pub const SERVER_NAME: &str = "controlplane.octoisp.internal";

/// Picks the newest version both sides speak, given the agent's inclusive range.
pub fn negotiate_version(agent_min: u16, agent_max: u16) -> Option<u16> {
    let lo = agent_min.max(PROTOCOL_VERSION_MIN);
    let hi = agent_max.min(PROTOCOL_VERSION_MAX);
    (lo <= hi).then_some(hi)
}

/// Every message of the protocol. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Agent → control plane, first message of the control stream of an enrolled agent.
    Hello(Hello),
    /// Control plane → agent: the session is accepted.
    Welcome(Welcome),
    /// Control plane → agent: refused; the connection closes after it.
    Reject(Reject),
    /// Agent → control plane, first message of the control stream of an agent that is not enrolled yet.
    Enroll(EnrollRequest),
    /// Control plane → agent: the signed certificate.
    Enrolled(EnrollResponse),
    /// Agent → control plane: a batch from the outbox.
    Batch(Batch),
    /// Control plane → agent: the batch is committed in PostgreSQL (or was already).
    Ack(Ack),
    /// Control plane → agent: the batch was not stored.
    Nack(Nack),
    /// Agent → control plane on the control stream: liveness and outbox health.
    Heartbeat(Heartbeat),
    /// Control plane → agent: run a command.
    Command(Command),
    /// Agent → control plane: streamed progress of a running command (not durable; the result is).
    CommandProgress(CommandProgress),
    /// Agent → control plane, first and only frame of a stream of its own: send me this firmware image.
    FirmwareFetch(FirmwareFetch),
    /// Control plane → agent on a [`Message::FirmwareFetch`] stream: the image's size, then its bytes from
    /// `offset` to the end as the raw rest of the stream (not framed); or why not.
    FirmwareOffer(FirmwareOffer),
}

/// First message of an enrolled agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Oldest protocol version the agent speaks.
    pub version_min: u16,
    /// Newest protocol version the agent speaks.
    pub version_max: u16,
    /// Agent software version, for display.
    pub agent_version: String,
    /// Host name of the agent's machine, for display.
    pub hostname: String,
}

/// The control plane accepted the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version chosen for this connection.
    pub version: u16,
    /// The agent's identity as the control plane knows it (from its certificate).
    pub agent_id: Uuid,
    /// Provider (tenant) the agent belongs to.
    pub provider_id: Uuid,
    /// POP the agent serves.
    pub pop_id: Uuid,
    /// Control plane clock, milliseconds since the Unix epoch, so the agent can report its skew.
    pub server_time_ms: i64,
    /// Largest encoded batch frame the control plane accepts, in bytes.
    pub max_batch_bytes: u32,
    /// Batches the agent may have in flight (unacknowledged) at once.
    pub max_in_flight: u16,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u16,
}

/// Why the control plane refused a connection or an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// The agent's certificate was revoked.
    Revoked,
    /// The certificate names no agent the control plane knows.
    UnknownAgent,
    /// A certificate is required (send Hello only after enrolling).
    CertificateRequired,
    /// The enrollment token is unknown or malformed.
    InvalidToken,
    /// The enrollment token has expired.
    TokenExpired,
    /// The enrollment token was already used.
    TokenUsed,
    /// The certificate signing request is invalid.
    InvalidCsr,
    /// The first message was not Hello or Enroll, or could not be decoded.
    ProtocolError,
    /// The control plane is overloaded or shutting down; retry later.
    Unavailable,
    /// Something failed inside the control plane.
    Internal,
}

/// A refusal, with a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// What happened and what to do, for the operator.
    pub message: String,
}

/// Enrollment of a new agent with a one-time token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// Oldest protocol version the agent speaks.
    pub version_min: u16,
    /// Newest protocol version the agent speaks.
    pub version_max: u16,
    /// The secret part of the one-time enrollment token.
    pub token: String,
    /// PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
    /// Host name of the agent's machine.
    pub hostname: String,
    /// Agent software version.
    pub agent_version: String,
}

/// The agent's new identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Identity assigned to the agent.
    pub agent_id: Uuid,
    /// Provider the token was issued for.
    pub provider_id: Uuid,
    /// POP the token was issued for.
    pub pop_id: Uuid,
    /// The agent's certificate, PEM, signed by the control plane CA.
    pub cert_pem: String,
    /// The control plane CA certificate, PEM.
    pub ca_pem: String,
}

/// A batch of outbox content. Everything in it is stored in one PostgreSQL transaction, exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Sequence number assigned by the agent when the batch was formed; never reused; a resend keeps it.
    pub seq: u64,
    /// Every batch with a smaller `seq` is settled (acknowledged or abandoned): the agent will never send it again.
    pub settled_below: u64,
    /// When the batch was formed, agent clock, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Definitions of series referenced by `samples` that the control plane may not know yet.
    pub series: Vec<SeriesDef>,
    /// Metric samples, columnar.
    pub samples: SampleBlock,
    /// Everything that is not a metric sample.
    pub records: Vec<Record>,
}

/// Whether a series is a gauge or a monotonically increasing counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// A value that goes up and down (latency, temperature, optical power).
    Gauge,
    /// A counter that only goes up until it wraps or its device restarts (ifHCInOctets).
    Counter,
}

/// A time series, defined by the agent and identified by an agent-local id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesDef {
    /// Agent-local id, stable for the life of the agent's outbox.
    pub id: u64,
    /// Agent-scoped natural key of the device the series belongs to, such as `icmp:192.0.2.1`,
    /// `snmp:198.51.100.7` or `cwmp:00259E-HG8245H-48575443A1B2C3D4`.
    pub device_key: String,
    /// Metric name, such as `ping.rtt_ms` or `if.in_octets`.
    pub metric: String,
    /// Labels that tell series of one device and metric apart, such as `("ifName", "ge-0/0/1")`.
    pub labels: Vec<(String, String)>,
    /// Gauge or counter.
    pub kind: MetricKind,
}

/// One metric sample, in the form producers and consumers use (the wire form is [`SampleBlock`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Agent-local series id ([`SeriesDef::id`]).
    pub series: u64,
    /// Sample time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// Everything the agent sends upstream that is not a metric sample. These are never dropped silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// Something happened (device went down, trap received, CPE booted).
    Event(Event),
    /// What a device is (from SNMP system group, TR-069 Inform, discovery).
    Inventory(Inventory),
    /// The outcome of a TR-069 exchange or task.
    Tr069Result(Tr069Result),
    /// The final result of a command sent by the control plane.
    CommandResult(CommandResult),
    /// The agent dropped data under its disk cap policy.
    DropReport(DropReport),
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs attention.
    Warning,
    /// Service affected.
    Critical,
}

/// Something that happened at a point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Agent-generated id, unique: ingest stores an event once even if it is sent twice.
    pub id: Uuid,
    /// When it happened, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Device concerned, if any.
    pub device_key: Option<String>,
    /// Kind, dotted, such as `snmp.trap`, `ping.down`, `cwmp.boot`.
    pub kind: String,
    /// Severity.
    pub severity: Severity,
    /// Human-readable message.
    pub message: String,
    /// Extra attributes.
    pub attrs: Vec<(String, String)>,
}

/// What a device is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Inventory {
    /// When it was observed, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Agent-scoped natural key of the device.
    pub device_key: String,
    /// Vendor, normalized (for example `Huawei`, `Intelbras`).
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number.
    pub serial_number: Option<String>,
    /// IEEE OUI of the manufacturer (TR-069 DeviceId).
    pub oui: Option<String>,
    /// TR-069 ProductClass.
    pub product_class: Option<String>,
    /// Firmware or software version.
    pub firmware: Option<String>,
    /// Management IP address.
    pub mgmt_ip: Option<String>,
    /// Anything else known (sysDescr, sysObjectID, hardware version).
    pub attrs: Vec<(String, String)>,
}

/// [`Tr069Result::kind`] of the record an ACS sends for an Inform that reported nothing else (a periodic
/// one): the control plane advances the CPE's `last_seen` with it and does not store it as a result.
pub const TR069_INFORM_SEEN: &str = "Inform";

/// The outcome of a TR-069 exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tr069Result {
    /// Agent-generated id, unique per result.
    pub id: Uuid,
    /// When it completed, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Device (CPE) concerned.
    pub device_key: String,
    /// Task that produced it, when it came from a queued task.
    pub task_id: Option<Uuid>,
    /// RPC or task kind, such as `GetParameterValues` or `Download`.
    pub kind: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// CWMP fault code, when it failed with one.
    pub fault_code: Option<u32>,
    /// CWMP fault string.
    pub fault_string: Option<String>,
    /// Parameter names and values reported.
    pub parameters: Vec<(String, String)>,
}

/// A command from the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Command id, assigned centrally; the agent runs a given id at most once.
    pub id: Uuid,
    /// After this instant (milliseconds since the Unix epoch) the agent must not start it.
    pub deadline_ms: i64,
    /// Command name, such as `ping`, `mtr`, `tr069.reboot`, `config.update`.
    pub name: String,
    /// Arguments, JSON object.
    pub args_json: String,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed.
    Failed,
    /// It was not started because its deadline had passed.
    Expired,
    /// The agent does not know this command or its arguments are invalid.
    Rejected,
    /// It was withdrawn (`tr069.withdraw`) before it took effect: its TR-069 task was removed before any CPE
    /// session started it. Sent only in answer to a `tr069.withdraw`, which only a control plane that knows this
    /// variant sends.
    Cancelled,
}

/// The final, durable result of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub command_id: Uuid,
    /// When it finished, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// How it ended.
    pub status: CommandStatus,
    /// Result, JSON.
    pub output_json: String,
    /// Error message, when it did not succeed.
    pub error: Option<String>,
}

/// Streamed progress of a running command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandProgress {
    /// The command's id.
    pub command_id: Uuid,
    /// Increasing per command, from 0.
    pub seq: u32,
    /// Progress, JSON (an MTR cycle, scan progress).
    pub payload_json: String,
}

/// The agent dropped or refused data because of its disk cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropReport {
    /// Agent-generated id, unique per report.
    pub id: Uuid,
    /// Start of the period covered, milliseconds since the Unix epoch.
    pub from_ms: i64,
    /// End of the period covered.
    pub to_ms: i64,
    /// Metric samples dropped (oldest first) in the period.
    pub samples_dropped: u64,
    /// Records (events, results) refused at the hard ceiling in the period; each was also logged.
    pub records_refused: u64,
    /// Why, for the operator.
    pub reason: String,
}

/// A request for a firmware image held by the control plane (`POST /api/v1/firmware/images`). Only images of the
/// agent's own provider (from its certificate) are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareFetch {
    /// SHA-256 of the image, lowercase hex: images are content-addressed.
    pub sha256: String,
    /// Bytes the agent already holds (a resumed transfer); the control plane sends from here.
    pub offset: u64,
}

/// The answer to a [`FirmwareFetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FirmwareOffer {
    /// The image follows on the stream: bytes `offset..size`, then the stream finishes.
    Sending {
        /// Whole size of the image, bytes.
        size: u64,
        /// Where the bytes that follow start (the request's offset, or 0 when it was beyond the end).
        offset: u64,
    },
    /// Not sent: no such image for this agent's provider, or the control plane cannot read it.
    Refused {
        /// Why, for the operator.
        message: String,
    },
}

/// Periodic liveness and outbox health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Agent clock, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Seconds since the agent process started.
    pub uptime_secs: u64,
    /// Records waiting in the outbox (sample chunks and other records).
    pub outbox_records: u64,
    /// Samples waiting in the outbox.
    pub outbox_samples: u64,
    /// Bytes used by the outbox content.
    pub outbox_bytes: u64,
    /// Creation time of the oldest waiting record, if any.
    pub oldest_ms: Option<i64>,
    /// Samples dropped under the disk cap since the outbox was created.
    pub samples_dropped_total: u64,
}

/// The batch is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The batch's sequence number.
    pub seq: u64,
    /// True when the batch had already been stored before (a replay): nothing was written twice.
    pub duplicate: bool,
}

/// Why a batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NackCode {
    /// The batch could not be decoded or is invalid; resending it unchanged will fail again.
    Malformed,
    /// A transient failure (database unavailable, overload): retry after the delay.
    Retry,
    /// Samples reference series ids the control plane does not know: resend with their definitions.
    UnknownSeries(Vec<u64>),
}

/// The batch was not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nack {
    /// The batch's sequence number.
    pub seq: u64,
    /// Why.
    pub code: NackCode,
    /// Explanation for the operator.
    pub message: String,
    /// Suggested delay before a retry, milliseconds.
    pub retry_after_ms: u32,
}
