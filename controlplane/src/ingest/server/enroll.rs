//! Enrollment over a connection without a client certificate: check and spend the token, sign the CSR.

use std::sync::Arc;
use std::time::Duration;

use octoisp_shared::{EnrollResponse, Message, RejectCode};
use quinn::{Connection, VarInt};
use uuid::Uuid;

use super::wire::{ReadFrameError, message_name, open_control, reject, write_message};
use super::{CLOSE_OK, Shared};
use crate::ca::{self, EnrollmentToken};
use crate::registry;

pub(super) async fn enroll_session(conn: Connection, shared: Arc<Shared>) {
    let Some((mut send, _recv, first)) = open_control(&conn, &shared).await else {
        return;
    };
    let req = match first {
        Ok(Message::Enroll(req)) => req,
        Ok(Message::Hello(_)) => {
            let msg =
                "Hello needs a client certificate: enroll first (octoisp-agent enroll)".to_string();
            return reject(&conn, &mut send, RejectCode::CertificateRequired, msg).await;
        }
        Ok(other) => {
            let msg = format!(
                "expected Enroll as the first message, got {}",
                message_name(&other)
            );
            return reject(&conn, &mut send, RejectCode::ProtocolError, msg).await;
        }
        Err(ReadFrameError::Decode(err)) => {
            return reject(
                &conn,
                &mut send,
                RejectCode::ProtocolError,
                format!("undecodable first message: {err}"),
            )
            .await;
        }
        Err(err) => {
            tracing::debug!(error = %err, "Control stream broke before its first message.");
            return;
        }
    };
    let outcome = enroll(&shared, &req).await;
    match outcome {
        Ok(resp) => {
            tracing::info!(
                agent = %resp.agent_id, provider = %resp.provider_id, pop = %resp.pop_id,
                hostname = %req.hostname, "Agent enrolled."
            );
            metrics::counter!("octoisp_ingest_enrollments_total", "result" => "ok").increment(1);
            if write_message(&mut send, &Message::Enrolled(resp))
                .await
                .is_ok()
            {
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            }
            conn.close(VarInt::from_u32(CLOSE_OK), b"enrolled");
        }
        Err((code, message)) => {
            metrics::counter!("octoisp_ingest_enrollments_total", "result" => format!("{code:?}"))
                .increment(1);
            reject(&conn, &mut send, code, message).await;
        }
    }
}

/// Checks and spends the token, signs the CSR. The CSR is checked before the token is touched, so that a bad CSR
/// does not consume a token.
async fn enroll(
    shared: &Shared,
    req: &octoisp_shared::EnrollRequest,
) -> Result<EnrollResponse, (RejectCode, String)> {
    if octoisp_shared::negotiate_version(req.version_min, req.version_max).is_none() {
        return Err((
            RejectCode::UnsupportedVersion,
            version_message(req.version_min, req.version_max),
        ));
    }
    if req.hostname.len() > 255 || req.agent_version.len() > 255 {
        return Err((
            RejectCode::ProtocolError,
            "hostname and agent_version are limited to 255 bytes".into(),
        ));
    }
    let token: EnrollmentToken = req.token.parse().map_err(|err: ca::TokenParseError| {
        (
            RejectCode::InvalidToken,
            format!("malformed enrollment token: {err}"),
        )
    })?;
    if !token
        .ca_fingerprint
        .eq_ignore_ascii_case(&shared.ca.fingerprint_hex())
    {
        return Err((
            RejectCode::InvalidToken,
            "the token was issued by another control plane CA".into(),
        ));
    }
    ca::validate_csr(&req.csr_pem).map_err(|err| (RejectCode::InvalidCsr, err.to_string()))?;
    let ca = shared.ca.clone();
    let csr_pem = req.csr_pem.clone();
    let sign = move |agent_id: Uuid, grant: &registry::TokenGrant| {
        ca.sign_agent_csr(&csr_pem, agent_id, grant.provider_id, grant.pop_id)
            .map_err(|err| err.to_string())
    };
    let result = registry::enroll_agent(
        &shared.pool,
        token.token_id,
        &token.secret,
        &req.hostname,
        &req.agent_version,
        sign,
    )
    .await;
    match result {
        Ok((agent_id, grant, cert_pem)) => Ok(EnrollResponse {
            agent_id,
            provider_id: grant.provider_id,
            pop_id: grant.pop_id,
            cert_pem,
            ca_pem: shared.ca.cert_pem().to_string(),
        }),
        Err(registry::EnrollError::InvalidToken) => Err((
            RejectCode::InvalidToken,
            "unknown enrollment token or wrong secret".into(),
        )),
        Err(registry::EnrollError::TokenExpired) => Err((
            RejectCode::TokenExpired,
            "the enrollment token has expired: ask for a new one".into(),
        )),
        Err(registry::EnrollError::TokenUsed) => Err((
            RejectCode::TokenUsed,
            "the enrollment token was already used: ask for a new one".into(),
        )),
        Err(registry::EnrollError::Sign(msg)) => Err((RejectCode::InvalidCsr, msg)),
        Err(err) => {
            tracing::error!(error = %err, "Enrollment failed inside the control plane.");
            Err((
                RejectCode::Internal,
                "enrollment failed inside the control plane; retry later".into(),
            ))
        }
    }
}

pub(super) fn version_message(min: u16, max: u16) -> String {
    format!(
        "the agent speaks protocol versions {min}..={max}, this control plane {}..={}",
        octoisp_shared::PROTOCOL_VERSION_MIN,
        octoisp_shared::PROTOCOL_VERSION_MAX
    )
}
