//! Reading `ctl.toml` and talking to the manager's control API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_common::tls::{ClientIdentity, EndpointError, error_chain, refused_certificate_alert};
use palisade_proto::MAX_ALERTS_PER_PAGE;
use palisade_proto::v1::control_service_client::ControlServiceClient;
use palisade_proto::v1::{
    Alert, ListAgentsRequest, ListAgentsResponse, ListAlertsRequest, RestartAgentRequest,
    RestartAgentResponse, RunResponseRequest, RunResponseResponse,
};
use serde::Deserialize;
use tonic::transport::Channel;

use crate::cli::Failure;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCtlConfig {
    manager: String,
    #[serde(default = "default_server_name")]
    server_name: String,
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn default_server_name() -> String {
    "localhost".into()
}

/// Where the manager is and which certificate to use.
#[derive(Debug, Clone)]
pub struct CtlConfig {
    /// host:port.
    pub manager: String,
    /// TLS name verified in the manager's certificate.
    pub server_name: String,
    /// The CA.
    pub ca_cert: PathBuf,
    /// The operator certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl CtlConfig {
    /// Reads `ctl.toml`; relative paths are relative to it.
    pub fn load(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::Usage(format!(
                "cannot read {}: {e} (give --config or set PALISADE_CTL_CONFIG)",
                path.display()
            ))
        })?;
        let raw: RawCtlConfig = palisade_common::config::ConfigError::deserialize(path, &text)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Self {
            manager: raw.manager,
            server_name: raw.server_name,
            ca_cert: base.join(raw.ca_cert),
            cert: base.join(raw.cert),
            key: base.join(raw.key),
        })
    }
}

/// Connects to the control API.
pub async fn connect(config: &CtlConfig) -> Result<ControlServiceClient<Channel>, Failure> {
    let tls = ClientIdentity {
        ca_cert: &config.ca_cert,
        cert: &config.cert,
        key: &config.key,
        server_name: &config.server_name,
    }
    .tls_config()
    .map_err(|e| Failure::Usage(e.to_string()))?;
    let unreachable = |text: String| {
        if text.contains("InvalidCertificate") || text.contains("invalid peer certificate") {
            return Failure::Runtime(format!(
                "the manager at {} presented a certificate that {} does not vouch for ({text})",
                config.manager,
                config.ca_cert.display()
            ));
        }
        Failure::Runtime(format!(
            "cannot reach the manager at {}: {text}",
            config.manager
        ))
    };
    let channel = palisade_common::tls::endpoint(&config.manager, tls)
        .map_err(|e| match e {
            EndpointError::Address { .. } => Failure::Usage(e.to_string()),
            EndpointError::Tls(text) => unreachable(text),
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(ControlServiceClient::new(channel))
}

/// Turns a refused call into one clear line.
pub fn call_failed(status: tonic::Status) -> Failure {
    // The TLS alert is only in the debug form of a transport error.
    let text = format!("{} {status:?}", error_chain(&status));
    if let Some(alert) = refused_certificate_alert(&text) {
        return Failure::Runtime(format!(
            "the manager refused this operator certificate (TLS alert {alert})"
        ));
    }
    Failure::Runtime(format!(
        "{}: {}",
        code_name(status.code()),
        status.message()
    ))
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unimplemented => "not available",
        tonic::Code::Unavailable => "manager unavailable",
        _ => "error",
    }
}

/// Lists agents.
pub async fn list_agents(
    client: &mut ControlServiceClient<Channel>,
    connected_only: bool,
    disconnected_only: bool,
    include_removed: bool,
) -> Result<ListAgentsResponse, Failure> {
    client
        .list_agents(ListAgentsRequest {
            connected_only,
            disconnected_only,
            include_removed,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(call_failed)
}

/// Runs a response on agents.
pub async fn run_response(
    client: &mut ControlServiceClient<Channel>,
    request: RunResponseRequest,
) -> Result<RunResponseResponse, Failure> {
    client
        .run_response(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(call_failed)
}

/// Asks agents to restart; an agent named but not connected is an error
/// (nothing was sent to it).
pub async fn restart(
    client: &mut ControlServiceClient<Channel>,
    agent_ids: Vec<String>,
    all_agents: bool,
) -> Result<RestartAgentResponse, Failure> {
    let r = client
        .restart_agent(RestartAgentRequest {
            agent_ids,
            all_agents,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(call_failed)?;
    if !all_agents && !r.not_connected.is_empty() {
        return Err(Failure::Runtime(format!(
            "agent {} is not connected: it cannot be asked to restart",
            r.not_connected.join(", ")
        )));
    }
    Ok(r)
}

/// Alerts asked for per `ListAlerts` call: well under the manager's
/// [`MAX_ALERTS_PER_PAGE`], so that a page of correlation alerts (each
/// with its earlier lines) stays far below gRPC's 4 MiB message limit.
const ALERTS_PAGE: u32 = 1_000;

/// `alerts`: the newest `request.limit` matching alerts, newest first,
/// however many that is: the manager answers one page per call, so the
/// pages are asked for one after the other, each older than the last. A
/// limit of 0 takes the manager's default.
pub async fn list_alerts(
    client: &mut ControlServiceClient<Channel>,
    mut request: ListAlertsRequest,
) -> Result<Vec<Alert>, Failure> {
    let wanted = request.limit as usize;
    let mut alerts: Vec<Alert> = Vec::new();
    loop {
        let left = wanted.saturating_sub(alerts.len());
        request.limit = u32::try_from(left)
            .unwrap_or(u32::MAX)
            .min(ALERTS_PAGE.min(MAX_ALERTS_PER_PAGE));
        let page = client
            .list_alerts(request.clone())
            .await
            .map_err(call_failed)?
            .into_inner()
            .alerts;
        let last = page.last().and_then(|a| a.id.parse::<i64>().ok());
        let full = wanted > 0 && page.len() == request.limit as usize;
        alerts.extend(page);
        match last {
            Some(id) if full && alerts.len() < wanted => request.before_id = id,
            _ => return Ok(alerts),
        }
    }
}

/// `alerts --follow`: prints each alert as the manager stores it, until
/// the manager ends the stream or the operator interrupts.
pub async fn follow_alerts(
    client: &mut ControlServiceClient<Channel>,
    request: ListAlertsRequest,
    json: bool,
) -> Result<(), Failure> {
    use std::io::Write;
    let mut stream = client
        .follow_alerts(request)
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut stdout = std::io::stdout();
    let print = |stdout: &mut std::io::Stdout, text: String| {
        // A closed pipe (`| head`) ends the command quietly.
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_ok()
    };
    if !json && !print(&mut stdout, crate::output::alert_header_line()) {
        return Ok(());
    }
    loop {
        match stream.message().await {
            Ok(Some(alert)) => {
                let text = if json {
                    format!(
                        "{}\n",
                        crate::output::json_line(&crate::output::alert_json(&alert))
                    )
                } else {
                    crate::output::alert_line(&alert)
                };
                if !print(&mut stdout, text) {
                    return Ok(());
                }
            }
            Ok(None) => {
                return Err(Failure::Runtime(
                    "the manager ended the alert stream".into(),
                ));
            }
            Err(status) => return Err(call_failed(status)),
        }
    }
}
