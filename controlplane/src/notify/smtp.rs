//! Mail over SMTP with lettre on rustls: plain, STARTTLS or implicit TLS, authentication optional. Used by the
//! email channel and, as [`SmtpMailer`], for password-reset mail. Passwords are never logged.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::auth::{Mail, MailError, Mailer};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (only for a relay on the same host or network).
    None,
    /// Plain connection upgraded with STARTTLS (required, not opportunistic); usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte; usually port 465.
    Tls,
}

/// An SMTP server.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name (also the name its TLS certificate must carry).
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH (none: no authentication).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH (prefer `OCTOISP_CP__NOTIFY__SMTP__PASSWORD`).
    #[serde(default)]
    pub password: Option<String>,
    /// `From` address, such as `OctoISP <noc@example.net>`.
    pub from: String,
    /// Timeout of one SMTP session, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_port() -> u16 {
    587
}

fn default_timeout() -> u64 {
    15
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .finish()
    }
}

impl SmtpConfig {
    /// Checks the values; the error names the key (relative to the section).
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("host must not be empty".into());
        }
        if self.port == 0 {
            return Err("port must be > 0".into());
        }
        if self.from.parse::<Mailbox>().is_err() {
            return Err(format!(
                "from: `{}` is not a mail address such as `OctoISP <noc@example.net>`",
                self.from
            ));
        }
        if self.timeout_secs == 0 {
            return Err("timeout_secs must be > 0".into());
        }
        Ok(())
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SmtpError> {
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned()).map_err(|e| SmtpError::Config(e.to_string()))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(Duration::from_secs(self.timeout_secs)));
        builder = match self.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::Starttls => builder.tls(Tls::Required(tls(&self.host)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&self.host)?)),
        };
        if let Some(user) = &self.username {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                self.password.clone().unwrap_or_default(),
            ));
        }
        Ok(builder.build())
    }

    /// Sends one plain-text UTF-8 message (base64 body) to `to`.
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), SmtpError> {
        if to.is_empty() {
            return Err(SmtpError::Address("no recipient".into()));
        }
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|_| SmtpError::Address(format!("invalid From `{}`", self.from)))?;
        let mut msg = Message::builder().from(from).subject(subject);
        for addr in to {
            let mbox: Mailbox = addr
                .parse()
                .map_err(|_| SmtpError::Address(format!("invalid recipient `{addr}`")))?;
            msg = msg.to(mbox);
        }
        let msg = msg
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .header(ContentTransferEncoding::Base64)
                    .body(body.to_owned()),
            )
            .map_err(|e| SmtpError::Address(e.to_string()))?;
        self.transport()?
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| SmtpError::Send {
                permanent: e.is_permanent(),
                message: e.to_string(),
            })
    }
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// An address is invalid (permanent).
    #[error("{0}")]
    Address(String),
    /// The TLS settings are unusable (permanent).
    #[error("SMTP TLS setup: {0}")]
    Config(String),
    /// The server refused the message or could not be reached.
    #[error("SMTP: {message}")]
    Send {
        /// A 5xx answer: retrying will not help.
        permanent: bool,
        /// What went wrong (lettre's message; it never contains the password).
        message: String,
    },
}

impl SmtpError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            SmtpError::Address(_) | SmtpError::Config(_) => true,
            SmtpError::Send { permanent, .. } => *permanent,
        }
    }
}

/// The password-reset [`Mailer`] over SMTP.
#[derive(Debug, Clone)]
pub struct SmtpMailer {
    config: SmtpConfig,
}

impl SmtpMailer {
    /// A mailer sending through `config`.
    pub fn new(config: SmtpConfig) -> SmtpMailer {
        SmtpMailer { config }
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            self.config
                .send(std::slice::from_ref(&mail.to), &mail.subject, &mail.body)
                .await
                .map_err(|e| MailError(e.to_string()))?;
            tracing::info!(to = %mail.to, subject = %mail.subject, "Mail sent over SMTP.");
            Ok(())
        })
    }
}
