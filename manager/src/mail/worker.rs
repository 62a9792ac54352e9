//! The mail sink and its sending task.
//!
//! [`Mailer::publish`] (the outputs fan-out) and [`Mailer::response`] (the
//! responder) lay a mail out and push it onto a bounded queue under a
//! short lock; when the queue is full the oldest waiting mail is dropped
//! (as OSSEC's maild drops from its list) and counted in
//! `Stats::mails_dropped`. One task takes mails off the queue, passes them
//! through the period budget and sends them with lettre. While the server
//! cannot be reached the task retries the same mail with exponential
//! backoff (1 s doubling up to `retry_max`) and the queue absorbs what
//! arrives meanwhile; a mail the server refuses for good (5xx) is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use jiff::tz::TimeZone;
use palisade_engine::alert::Alert;

use super::budget::{Admit, Budget};
use super::decide::{self, Outgoing};
use super::report::{self, ResponseReport};
use super::{EmailConfig, SmtpTls};
use crate::outputs::AlertSink;
use crate::stats::Stats;
use crate::store::{StoredAlert, now_ms};

/// The display name in `From:` and `Reply-To:` (OSSEC: "OSSEC HIDS").
const DISPLAY_NAME: &str = "Palisade HIDS";
/// The first pause after a failed attempt.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The mailer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address in `[email]` does not parse.
    #[error("email: {0}")]
    Address(String),
    /// TLS parameters could not be built.
    #[error("email: TLS: {0}")]
    Tls(#[from] lettre::transport::smtp::Error),
}

/// `X-IDS-Palisade: <idsname>` (OSSEC: `X-IDS-OSSEC`).
#[derive(Debug, Clone)]
struct XIds(String);

impl Header for XIds {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-IDS-Palisade")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Debug)]
struct Shared {
    config: EmailConfig,
    stats: Arc<Stats>,
    queue: Mutex<VecDeque<Outgoing>>,
    wake: Notify,
    /// Mails the task holds (waiting for the digest, or being sent).
    in_task: AtomicU64,
    /// The queue overflowed and that was logged; cleared once it drains.
    overflowing: AtomicBool,
}

impl Shared {
    fn gauge(&self, queued: usize) {
        let held = self.in_task.load(Ordering::Relaxed);
        self.stats
            .mail_queue
            .store(queued as u64 + held, Ordering::Relaxed);
    }

    fn push(&self, mail: Outgoing) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.push_back(mail);
        if q.len() > self.config.queue_size
            && let Some(old) = q.pop_front()
        {
            self.stats.mails_dropped.fetch_add(1, Ordering::Relaxed);
            if !self.overflowing.swap(true, Ordering::Relaxed) {
                warn!(queue_size = self.config.queue_size, dropped = %old.subject, "Mail queue full; dropping the oldest mail.");
            }
        }
        self.gauge(q.len());
        drop(q);
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Outgoing> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mail = q.pop_front();
        if mail.is_some() {
            self.in_task.fetch_add(1, Ordering::Relaxed);
        }
        if q.is_empty() {
            self.overflowing.store(false, Ordering::Relaxed);
        }
        self.gauge(q.len());
        mail
    }

    fn done(&self, n: u64) {
        self.in_task.fetch_sub(n, Ordering::Relaxed);
        let len = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.gauge(len);
    }
}

/// The e-mail sink: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Mailer {
    shared: Arc<Shared>,
}

impl Mailer {
    /// Builds the SMTP transport and starts the sending task, which ends
    /// when `shutdown` is cancelled (mails still waiting are logged and
    /// lost).
    pub fn start(
        config: EmailConfig,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> Result<Self, MailError> {
        let sender = Sender::new(&config)?;
        info!(
            server = %config.smtp_server,
            port = config.smtp_port,
            tls = ?config.tls,
            max_per_period = config.max_per_period,
            period_s = config.period.as_secs(),
            "Mailer started."
        );
        let shared = Arc::new(Shared {
            config,
            stats,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            in_task: AtomicU64::new(0),
            overflowing: AtomicBool::new(false),
        });
        tokio::spawn(run(shared.clone(), sender, shutdown));
        Ok(Self { shared })
    }

    /// Queues the mails for one alert, if it is to be mailed.
    pub fn alert(&self, alert: &Alert) {
        for mail in decide::notifications(&self.shared.config, alert, &TimeZone::system()) {
            self.shared.push(mail);
        }
    }

    /// Queues a mail about an active response an agent carried out or
    /// failed, when `active_responses` is on; it goes to the `to` list.
    pub fn response(&self, report: &ResponseReport<'_>) {
        let c = &self.shared.config;
        if !c.active_responses || c.to.is_empty() {
            return;
        }
        self.shared.push(Outgoing {
            to: c.to.clone(),
            subject: report::response_subject(report),
            body: report::response_body(report, &TimeZone::system()),
            level: 0,
            do_not_delay: false,
            do_not_group: false,
        });
    }
}

impl AlertSink for Mailer {
    fn publish(&self, stored: &StoredAlert) {
        self.alert(&stored.alert);
    }
}

/// Builds and sends messages.
struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    idsname: Option<String>,
}

fn mailbox(name: Option<&str>, address: &str) -> Result<Mailbox, MailError> {
    let address: Address = address
        .parse()
        .map_err(|e| MailError::Address(format!("{address:?}: {e}")))?;
    Ok(Mailbox::new(name.map(str::to_string), address))
}

impl Sender {
    fn new(c: &EmailConfig) -> Result<Self, MailError> {
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls | SmtpTls::Tls => {
                let mut params = TlsParameters::builder(c.smtp_server.clone());
                if let Some(pem) = &c.tls_ca_pem {
                    params = params.add_root_certificate(Certificate::from_pem(pem)?);
                }
                let params = params.build_rustls()?;
                if c.tls == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.smtp_server)
            .port(c.smtp_port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some(helo) = &c.helo_server {
            builder = builder.hello_name(ClientId::Domain(helo.clone()));
        }
        if let Some((user, password)) = &c.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from: mailbox(Some(DISPLAY_NAME), &c.from)?,
            reply_to: c
                .reply_to
                .as_deref()
                .map(|r| mailbox(Some(DISPLAY_NAME), r))
                .transpose()?,
            idsname: c.idsname.clone(),
        })
    }

    fn message(&self, mail: &Outgoing) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &mail.to {
            b = b.to(mailbox(None, to).map_err(|e| e.to_string())?);
        }
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        if let Some(ids) = &self.idsname {
            b = b.header(XIds(ids.clone()));
        }
        b.body(body(&mail.body)).map_err(|e| e.to_string())
    }
}

/// The body as OSSEC sends it, plain text with CRLF line ends: 7bit, or
/// 8bit when a log line is not ASCII. Only a body SMTP cannot carry as is
/// (a line over 998 bytes, a stray CR or NUL) is left to lettre to encode
/// (quoted-printable).
fn body(text: &str) -> Body {
    if text.contains(['\r', '\0']) || text.split('\n').any(|l| l.len() > 998) {
        return Body::new(text.to_string());
    }
    let encoding = match text.is_ascii() {
        true => ContentTransferEncoding::SevenBit,
        false => ContentTransferEncoding::EightBit,
    };
    Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), encoding)
}

/// Outcome of one delivery.
enum Delivery {
    Sent,
    Dropped,
    Shutdown,
}

async fn run(shared: Arc<Shared>, sender: Sender, shutdown: CancellationToken) {
    let c = &shared.config;
    let period_ms = i64::try_from(c.period.as_millis()).unwrap_or(i64::MAX);
    let mut budget = Budget::new(c.max_per_period, period_ms, c.queue_size, now_ms());
    let mut warned_budget = false;
    loop {
        let held = budget.held() as u64;
        let digests = budget.roll(now_ms());
        if !digests.is_empty() {
            warned_budget = false;
            // `held` mails became `digests.len()` mails.
            shared
                .in_task
                .fetch_sub(held.saturating_sub(digests.len() as u64), Ordering::Relaxed);
            for mail in digests {
                info!(subject = %mail.subject, "Sending the digest of mails held back by email_maxperhour.");
                let d = deliver(&shared, &sender, &mail, &shutdown).await;
                shared.done(1);
                if matches!(d, Delivery::Shutdown) {
                    return stop(&shared, &budget);
                }
            }
        }
        let Some(mail) = shared.pop() else {
            let until = budget.period_end() - now_ms();
            let sleep = Duration::from_millis(u64::try_from(until.max(1)).unwrap_or(1));
            tokio::select! {
                _ = shutdown.cancelled() => return stop(&shared, &budget),
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            continue;
        };
        match budget.admit(mail) {
            Admit::Send(mail) => {
                let d = deliver(&shared, &sender, &mail, &shutdown).await;
                shared.done(1);
                if matches!(d, Delivery::Shutdown) {
                    return stop(&shared, &budget);
                }
            }
            Admit::Held => {
                if !warned_budget {
                    warned_budget = true;
                    info!(
                        max_per_period = c.max_per_period,
                        until_ms = budget.period_end(),
                        "Mail budget for this period spent; holding mails for one digest."
                    );
                }
            }
            Admit::HeldDroppedOldest => {
                shared.done(1);
                shared.stats.mails_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(
                    held = budget.held(),
                    "Too many mails held for the digest; dropping the oldest."
                );
            }
        }
    }
}

fn stop(shared: &Shared, budget: &Budget) {
    let queued = shared
        .queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    info!(
        queued,
        held = budget.held(),
        "Mailer stopped; unsent mails are lost."
    );
}

/// Sends one mail, retrying while the server cannot be reached.
async fn deliver(
    shared: &Shared,
    sender: &Sender,
    mail: &Outgoing,
    shutdown: &CancellationToken,
) -> Delivery {
    let message = match sender.message(mail) {
        Ok(m) => m,
        Err(error) => {
            shared.stats.mails_dropped.fetch_add(1, Ordering::Relaxed);
            warn!(%error, subject = %mail.subject, "Cannot build the mail; dropped.");
            return Delivery::Dropped;
        }
    };
    let mut pause = RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        match sender.transport.send(message.clone()).await {
            Ok(_) => {
                shared.stats.mails_sent.fetch_add(1, Ordering::Relaxed);
                if failures > 0 {
                    info!(
                        attempts = failures + 1,
                        "Mail server reachable again; mail sent."
                    );
                } else {
                    debug!(subject = %mail.subject, "Mail sent.");
                }
                return Delivery::Sent;
            }
            Err(error) if error.is_permanent() => {
                shared.stats.mails_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(%error, subject = %mail.subject, "Mail refused by the server; dropped.");
                return Delivery::Dropped;
            }
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    warn!(
                        %error,
                        server = %shared.config.smtp_server,
                        port = shared.config.smtp_port,
                        "Cannot send mail; retrying with backoff."
                    );
                } else {
                    debug!(%error, attempt = failures, retry_in_s = pause.as_secs(), "Mail still not sent.");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Delivery::Shutdown,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(shared.config.retry_max);
            }
        }
    }
}
