//! `route-null` through rtnetlink, and the host's own addresses.
//!
//! Every route Palisade installs carries its own route protocol number
//! ([`PALISADE_ROUTE_PROTOCOL`], `proto 173` in `ip route`), so that after a
//! restart the agent can tell its routes from everyone else's: it removes
//! its own orphans and never touches a route it did not install. For the
//! same reason an add never replaces a foreign route for the same
//! destination; it fails and says so. Deletes carry the protocol too, and
//! the kernel matches it, so a delete cannot remove a foreign route either.
//!
//! [`RouteNull`] is the `route-null` [`Backend`] over it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use tracing::info;

use super::backend::{Backend, BackendError, Reconcile, Reconciled, Target};
use super::config::NullRouteType;
use super::order::Action;

/// The route protocol number on every route Palisade installs (0xAD).
pub const PALISADE_ROUTE_PROTOCOL: u8 = 0xAD;

/// The main routing table, where `route-null` routes live.
const RT_TABLE_MAIN: u32 = 254;

const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The kernel or rtnetlink refused a request.
    #[error("{what}: {source}")]
    Request {
        /// What was being done.
        what: String,
        /// The error.
        source: rtnetlink::Error,
    },
    /// A route for the address exists that Palisade did not install.
    #[error(
        "a route for {ip} that Palisade did not install exists (type {kind}, protocol {protocol}); left alone"
    )]
    Foreign {
        /// The destination.
        ip: IpAddr,
        /// Its type.
        kind: String,
        /// Its protocol number.
        protocol: u8,
    },
}

fn code(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
}

/// A host route installed by `route-null` (or found in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NullRoute {
    /// The blocked address (a /32 or /128).
    pub ip: IpAddr,
    /// Blackhole rather than unreachable.
    pub blackhole: bool,
}

/// An rtnetlink connection in the network namespace it was opened in.
///
/// The kernel runs one dump at a time per socket (a second one gets
/// EBUSY), so dumps are serialised; adds and deletes are not.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    dump_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

fn kind_of(t: NullRouteType) -> RouteType {
    match t {
        NullRouteType::Unreachable => RouteType::Unreachable,
        NullRouteType::Blackhole => RouteType::BlackHole,
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn message(ip: IpAddr, kind: RouteType) -> Result<RouteMessage, NetlinkError> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(ip, host_prefix(ip))
        .map_err(|e| NetlinkError::Request {
            what: format!("building a route for {ip}"),
            source: rtnetlink::Error::InvalidNla(e.to_string()),
        })?;
    Ok(builder
        .kind(kind)
        .protocol(RouteProtocol::Other(PALISADE_ROUTE_PROTOCOL))
        .table_id(RT_TABLE_MAIN)
        .build())
}

fn destination(m: &RouteMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

fn table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

impl Netlink {
    /// Opens a connection; its task runs on the current tokio runtime, and
    /// the socket belongs to the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            dump_lock: std::sync::Arc::default(),
        })
    }

    /// Host routes in the main table for `ip` (every protocol), as
    /// (type, protocol).
    async fn routes_for(&self, ip: IpAddr) -> Result<Vec<(RouteType, u8)>, NetlinkError> {
        let all = self.dump(ip.is_ipv4()).await?;
        Ok(all
            .into_iter()
            .filter(|m| {
                destination(m) == Some(ip)
                    && m.header.destination_prefix_length == host_prefix(ip)
                    && table(m) == RT_TABLE_MAIN
            })
            .map(|m| (m.header.kind, u8::from(m.header.protocol)))
            .collect())
    }

    async fn dump(&self, v4: bool) -> Result<Vec<RouteMessage>, NetlinkError> {
        let filter = if v4 {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        let _dumping = self.dump_lock.lock().await;
        self.handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "listing routes".into(),
                source,
            })
    }

    /// Installs a null route for `ip`. Idempotent: an existing Palisade
    /// route of the same type is success, one of the other type is replaced.
    /// A route for the same destination that Palisade did not install is
    /// never replaced: that is an error.
    pub async fn add_null_route(&self, ip: IpAddr, t: NullRouteType) -> Result<(), NetlinkError> {
        let kind = kind_of(t);
        match self.handle.route().add(message(ip, kind)?).execute().await {
            Ok(()) => return Ok(()),
            Err(e) if code(&e) == EEXIST => {}
            Err(source) => {
                return Err(NetlinkError::Request {
                    what: format!("adding a route for {ip}"),
                    source,
                });
            }
        }
        let existing = self.routes_for(ip).await?;
        if existing
            .iter()
            .any(|(k, p)| *p == PALISADE_ROUTE_PROTOCOL && *k == kind)
        {
            return Ok(());
        }
        if let Some((k, p)) = existing.iter().find(|(_, p)| *p != PALISADE_ROUTE_PROTOCOL) {
            return Err(NetlinkError::Foreign {
                ip,
                kind: format!("{k:?}").to_lowercase(),
                protocol: *p,
            });
        }
        // Ours, of the other type (the configuration changed): replace it.
        self.handle
            .route()
            .add(message(ip, kind)?)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("replacing the route for {ip}"),
                source,
            })
    }

    /// Removes Palisade's null route for `ip`, whatever its type. A missing
    /// route is success. The protocol in the request makes the kernel skip
    /// routes that are not Palisade's.
    pub async fn delete_null_route(&self, ip: IpAddr) -> Result<(), NetlinkError> {
        // Unspec matches either type; both families match the protocol.
        // Loop: IPv6 may hold an unreachable and a blackhole route at once.
        for _ in 0..4 {
            match self
                .handle
                .route()
                .del(message(ip, RouteType::Unspec)?)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if code(&e) == ESRCH || code(&e) == ENOENT => return Ok(()),
                Err(source) => {
                    return Err(NetlinkError::Request {
                        what: format!("deleting the route for {ip}"),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether Palisade's route for `ip` is installed.
    pub async fn has_null_route(&self, ip: IpAddr) -> Result<bool, NetlinkError> {
        Ok(self
            .routes_for(ip)
            .await?
            .iter()
            .any(|(_, p)| *p == PALISADE_ROUTE_PROTOCOL))
    }

    /// Every host route in the main table carrying Palisade's protocol.
    pub async fn palisade_routes(&self) -> Result<BTreeSet<NullRoute>, NetlinkError> {
        let mut out = BTreeSet::new();
        for v4 in [true, false] {
            for m in self.dump(v4).await? {
                if u8::from(m.header.protocol) != PALISADE_ROUTE_PROTOCOL
                    || table(&m) != RT_TABLE_MAIN
                {
                    continue;
                }
                if let Some(ip) = destination(&m)
                    && m.header.destination_prefix_length == host_prefix(ip)
                {
                    out.insert(NullRoute {
                        ip,
                        blackhole: m.header.kind == RouteType::BlackHole,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// `route-null`: a host route of the configured type per blocked address.
#[derive(Debug)]
pub struct RouteNull {
    netlink: Netlink,
    route_type: NullRouteType,
}

impl RouteNull {
    /// The response name.
    pub const NAME: &'static str = "route-null";

    /// Installs routes of `route_type` through `netlink`.
    pub fn new(netlink: Netlink, route_type: NullRouteType) -> Self {
        Self {
            netlink,
            route_type,
        }
    }
}

#[async_trait::async_trait]
impl Backend for RouteNull {
    fn program(&self) -> String {
        super::arlog::builtin_program(Self::NAME)
    }

    fn describe(&self, action: Action) -> String {
        match action {
            Action::Add => "add a null route".into(),
            Action::Delete => "remove the null route".into(),
        }
    }

    async fn add(&self, target: &Target) -> Result<String, BackendError> {
        self.netlink
            .add_null_route(target.ip, self.route_type)
            .await?;
        Ok(format!("{} route added", self.route_type.as_str()))
    }

    async fn delete(&self, target: &Target) -> Result<String, BackendError> {
        self.netlink.delete_null_route(target.ip).await?;
        Ok("route removed".to_owned())
    }

    /// Re-adds routes of live blocks that vanished and removes Palisade
    /// routes (by their protocol) that the ledger does not hold.
    async fn reconcile(&self, cx: &Reconcile<'_>) -> Reconciled {
        let mut done = Reconciled::default();
        let kernel = match self.netlink.palisade_routes().await {
            Ok(k) => k,
            Err(e) => {
                done.errors.push(e.into());
                return done;
            }
        };
        let in_kernel: BTreeSet<IpAddr> = kernel.iter().map(|r| r.ip).collect();
        let wanted: BTreeSet<IpAddr> = cx.live().iter().map(|b| b.srcip).collect();
        for ip in in_kernel.difference(&wanted) {
            let _guard = cx.lock(*ip).await;
            if cx.held(*ip).await {
                continue; // added meanwhile
            }
            match self.netlink.delete_null_route(*ip).await {
                Ok(()) => {
                    info!(%ip, "Removed a Palisade route the ledger does not hold.");
                    done.removed += 1;
                }
                Err(e) => done.errors.push(e.into()),
            }
        }
        for ip in wanted.difference(&in_kernel) {
            let _guard = cx.lock(*ip).await;
            match self.netlink.add_null_route(*ip, self.route_type).await {
                Ok(()) => {
                    info!(%ip, "Route of a block still due had vanished; added again.");
                    done.readded += 1;
                }
                Err(e) => done.errors.push(e.into()),
            }
        }
        done
    }
}
