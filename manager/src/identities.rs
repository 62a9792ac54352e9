//! Operators as registered identities, and the CA the running manager
//! renews agents' certificates with.
//!
//! Every operator (`palisadectl` user) has a certificate of its own,
//! registered by `operator add NAME` and revoked by `operator remove NAME`;
//! the control API admits only the certificate of a registered, live
//! operator ([`Operators::check`]), so removing one takes effect on its next
//! call, and on the alert feeds it has open within a second (the revocation
//! watcher ends them through [`Operators::revoke`]). An operator certificate
//! issued by an older `init` (before operators were registered) is adopted
//! as the first operator when the manager starts or an `operator` command
//! runs, so upgrading locks nobody out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use palisade_proto::identity::{self, Role};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};
use tracing::{info, warn};

use crate::config::ManagerConfig;
use crate::pki::{self, CertificateAuthority};
use crate::setup::SetupError;
use crate::store::{OperatorRow, Store};

/// The CA that renews agents' certificates, with the manager's clock; or
/// `None` (logged) when its key cannot be read here.
pub fn renewing_ca(config: &ManagerConfig) -> Option<Arc<CertificateAuthority>> {
    match CertificateAuthority::load(&config.ca_cert, &config.ca_key) {
        Ok(ca) => Some(Arc::new(ca.with_clock(config.clock.clone()))),
        Err(error) => {
            warn!(%error, "Cannot load the CA key: agents' certificates will not be renewed.");
            None
        }
    }
}

/// What `operator add` wrote.
#[derive(Debug, Clone)]
pub struct OperatorBundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Its `ctl.toml`, for `palisadectl -c`.
    pub ctl_config: PathBuf,
}

fn operators_dir(config: &ManagerConfig) -> PathBuf {
    config
        .source
        .parent()
        .unwrap_or(Path::new("."))
        .join("operators")
}

/// Writes an operator bundle (CA, certificate, key, `ctl.toml`) to `dir`.
pub fn write_bundle(
    dir: &Path,
    ca: &CertificateAuthority,
    issued: &pki::IssuedCert,
    config: &ManagerConfig,
) -> Result<PathBuf, SetupError> {
    std::fs::create_dir_all(dir).map_err(|source| SetupError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    pki::write_public(&dir.join("ca.pem"), ca.cert_pem())?;
    pki::write_public(&dir.join("operator.pem"), &issued.cert_pem)?;
    pki::write_private(&dir.join("operator.key"), &issued.key_pem)?;
    let ctl_config = dir.join("ctl.toml");
    pki::write_public(
        &ctl_config,
        &crate::setup::render_ctl_config(&config.advertise, &config.server_name),
    )?;
    Ok(ctl_config)
}

/// `operator add NAME`: registers an operator and writes its bundle to
/// `out`, or to `operators/NAME` beside the configuration.
pub async fn add_operator(
    config: &ManagerConfig,
    name: &str,
    out: Option<&Path>,
) -> Result<OperatorBundle, SetupError> {
    if !identity::is_valid_name(name) {
        return Err(SetupError::Usage(format!(
            "invalid operator name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with - or .)"
        )));
    }
    let ca = CertificateAuthority::load(&config.ca_cert, &config.ca_key)?
        .with_clock(config.clock.clone());
    let store = Store::open(&config.database).await?;
    adopt_legacy_operator(config, &store).await;
    let result = store
        .add_operator(name, || {
            let cert = ca.issue_operator(name).map_err(|e| e.to_string())?;
            Ok((cert.serial.clone(), cert))
        })
        .await;
    store.close().await;
    let issued = result?;
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| operators_dir(config).join(name));
    let ctl_config = write_bundle(&dir, &ca, &issued, config)?;
    Ok(OperatorBundle { dir, ctl_config })
}

/// `operator remove NAME`: its certificate is refused from then on, also on
/// connections it has open (the running manager notices within a second).
pub async fn remove_operator(
    config: &ManagerConfig,
    name: &str,
) -> Result<OperatorRow, SetupError> {
    let store = Store::open(&config.database).await?;
    adopt_legacy_operator(config, &store).await;
    let result = store.remove_operator(name).await;
    store.close().await;
    Ok(result?)
}

/// `operator list`: every operator, removed ones too.
pub async fn list_operators(config: &ManagerConfig) -> Result<Vec<OperatorRow>, SetupError> {
    let store = Store::open(&config.database).await?;
    adopt_legacy_operator(config, &store).await;
    let result = store.operators().await;
    store.close().await;
    Ok(result?)
}

/// Registers the operator certificate an older `init` wrote
/// (`operator/operator.pem` beside the configuration) when no operator is
/// registered yet. Problems are logged: the control API then admits only
/// operators added from now on.
pub async fn adopt_legacy_operator(config: &ManagerConfig, store: &Store) {
    let path = config
        .source
        .parent()
        .unwrap_or(Path::new("."))
        .join("operator")
        .join("operator.pem");
    if !path.exists() {
        return;
    }
    let adopted = async {
        let der = CertificateDer::from_pem_file(&path).map_err(|e| e.to_string())?;
        let id = identity::identity_from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let Role::Operator { name } = id.role else {
            return Err(format!("it is the certificate of {}", id.role));
        };
        if store
            .is_revoked(&id.serial)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        let done = store
            .adopt_first_operator(&name, &id.serial)
            .await
            .map_err(|e| e.to_string())?;
        Ok(done.then_some(name))
    }
    .await;
    match adopted {
        Ok(Some(name)) => {
            info!(operator = %name, file = %path.display(), "Registered the existing operator certificate as the first operator.");
        }
        Ok(None) => {}
        Err(error) => {
            warn!(file = %path.display(), %error, "Cannot register the existing operator certificate.");
        }
    }
}

/// An operator calling the control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The operator's name.
    pub name: String,
    /// Its certificate's serial.
    pub serial: String,
}

/// Who may call the control API, and the alert feeds open per certificate
/// (to end them when the certificate is revoked).
#[derive(Debug, Clone)]
pub struct Operators {
    store: Store,
    open: Arc<Mutex<OpenFeeds>>,
}

#[derive(Debug, Default)]
struct OpenFeeds {
    next: u64,
    by_id: HashMap<u64, (String, CancellationToken)>,
}

/// An open feed's registration; dropping it forgets the feed.
#[derive(Debug)]
pub struct FeedGuard {
    id: u64,
    open: Arc<Mutex<OpenFeeds>>,
    /// Cancelled when the operator's certificate is revoked.
    pub revoked: CancellationToken,
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .remove(&self.id);
    }
}

impl Operators {
    /// Operators as `store` registers them.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            open: Arc::default(),
        }
    }

    /// The registered, live operator whose certificate made `request`;
    /// anything else is refused and logged.
    pub async fn check<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let id = identity::identity_from_request(request).map_err(|e| {
            warn!(%peer, reason = %e, "Refused control call.");
            Status::unauthenticated(e.to_string())
        })?;
        let name = match id.role {
            Role::Operator { name } => name,
            other => {
                warn!(%peer, caller = %other, "Refused control call.");
                return Err(Status::permission_denied(format!(
                    "the control API needs an operator certificate; this is the certificate of {other}"
                )));
            }
        };
        match self.store.live_operator(&id.serial).await? {
            Some(row) if row.name == name => Ok(Caller {
                name,
                serial: id.serial,
            }),
            _ => {
                warn!(%peer, operator = %name, serial = %id.serial, "Refused control call: not a registered operator certificate.");
                Err(Status::permission_denied(format!(
                    "operator {name}'s certificate {} is not registered with this manager or was revoked (palisade-manager operator list)",
                    id.serial
                )))
            }
        }
    }

    /// Registers an open feed of `caller`'s.
    pub fn open_feed(&self, caller: &Caller) -> FeedGuard {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.next += 1;
        let id = open.next;
        let revoked = CancellationToken::new();
        open.by_id
            .insert(id, (caller.serial.clone(), revoked.clone()));
        FeedGuard {
            id,
            open: self.open.clone(),
            revoked,
        }
    }

    /// Ends the open feeds of revoked certificates; returns how many.
    pub fn revoke(&self, revoked_serials: &[String]) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ended = 0;
        for (serial, token) in open.by_id.values() {
            if revoked_serials.contains(serial) && !token.is_cancelled() {
                token.cancel();
                ended += 1;
            }
        }
        ended
    }

    /// Whether any feed is open (the watcher has nothing to do otherwise).
    pub fn any_open(&self) -> bool {
        !self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .is_empty()
    }
}
