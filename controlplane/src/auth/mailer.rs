//! Outgoing mail (password resets) behind a trait: [`LogMailer`] for installations without SMTP, [`MemoryMailer`]
//! for tests. Mail bodies carry secrets: nothing here logs them.

use std::fmt;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

/// One message to send.
#[derive(Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body (may contain a secret token).
    pub body: String,
    /// The secret the body carries, separately (for tests and richer templates).
    pub token: String,
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a mail could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot send mail: {0}")]
pub struct MailError(pub String);

/// Sends mail.
pub trait Mailer: Send + Sync + 'static {
    /// Sends `mail`.
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>>;
}

/// Logs that a mail was sent (recipient and subject), never its body.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            tracing::info!(to = %mail.to, subject = %mail.subject, "Mail sent (log mailer: not delivered).");
            Ok(())
        })
    }
}

/// Keeps every mail in memory, for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryMailer {
    sent: Arc<Mutex<Vec<Mail>>>,
}

impl MemoryMailer {
    /// Every mail sent so far.
    pub fn sent(&self) -> Vec<Mail> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Mailer for MemoryMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            self.sent
                .lock()
                .map_err(|_| MailError("memory mailer poisoned".into()))?
                .push(mail);
            Ok(())
        })
    }
}
