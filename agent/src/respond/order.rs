//! What the manager asks for and what the agent answers, in the agent's
//! own types: an [`Order`] as the manager sent it (nothing validated), the
//! [`Action`] (mapped to and from the wire's `CommandAction` here and
//! nowhere else), OSSEC's text arguments once validated ([`OssecArgs`]),
//! every reason an order fails ([`OrderError`]) and the [`Outcome`].

use std::net::IpAddr;
use std::time::Duration;

use palisade_proto::action::is_valid_user as valid_user;
use palisade_proto::v1::{Command, CommandAction, CommandResult};

use super::backend::BackendError;
use super::config::BUILTIN_RESPONSES;
use super::ledger::{Block, LedgerError};
use palisade_common::address::Refusal;

pub use palisade_proto::action::Action;

/// A command to carry out, as the manager sent it (nothing validated yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The manager's command id.
    pub command_id: String,
    /// The command name.
    pub response: String,
    /// None when the manager sent no valid action.
    pub action: Option<Action>,
    /// The address, as text.
    pub srcip: String,
    /// The user; empty = `-`.
    pub user: String,
    /// None = no timeout.
    pub timeout: Option<Duration>,
    /// Empty = a manual command (`(from_the_server)`).
    pub alert_id: String,
    /// 0 = a manual command (`(no_rule_id)`).
    pub rule_id: u32,
    /// The agent the alert came from.
    pub agent_id: String,
    /// OSSEC's location of the event (`(web01) 10.0.0.5->/var/log/x`).
    pub location: String,
}

impl From<&Command> for Order {
    fn from(c: &Command) -> Self {
        Self {
            command_id: c.id.clone(),
            response: c.response.clone(),
            action: Action::from_wire(c.action),
            srcip: c.srcip.clone(),
            user: c.user.clone(),
            timeout: (c.timeout_seconds > 0)
                .then(|| Duration::from_secs(u64::from(c.timeout_seconds))),
            alert_id: c.alert_id.clone(),
            rule_id: c.rule_id,
            agent_id: c.agent_id.clone(),
            location: c.location.clone(),
        }
    }
}

/// Why an order was not carried out. The text is what the manager and the
/// operator see.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// A safety rule refused the address.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// Neither add nor delete.
    #[error("the command has no valid action (add or delete)")]
    NoAction,
    /// `active_response.disabled`.
    #[error("active response is disabled on this agent")]
    Disabled,
    /// Not built in and not in `active_response.commands` (the name cut at
    /// 64 characters).
    #[error(
        "unknown response {0:?}: not built in ({builtins}) and not in active_response.commands",
        builtins = BUILTIN_RESPONSES.join(", ")
    )]
    UnknownResponse(String),
    /// The user has characters OSSEC's manager never sends.
    #[error("refused: the user name has characters other than letters, digits and ._@?-")]
    MalformedUser,
    /// The alert id has characters OSSEC's manager never sends.
    #[error("refused: the alert id is malformed")]
    MalformedAlertId,
    /// The location or agent id could split an argument or a log line.
    #[error("refused: the location or agent id is malformed")]
    MalformedLocation,
    /// The backend failed to block or unblock.
    #[error("{response} {ip}: {source}")]
    Backend {
        /// The response name.
        response: String,
        /// The address.
        ip: IpAddr,
        /// What went wrong (boxed: netlink's errors are large).
        source: Box<BackendError>,
    },
    /// An add the manager decided before an unblock of the same address
    /// that arrived first ([`super::lifted`]): carried out, it would block
    /// again what the operator lifted.
    #[error("not carried out: the address was unblocked by a later command ({by})")]
    Overtaken {
        /// The id of the delete that lifted it.
        by: i64,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl OrderError {
    /// The safety rule that refused the order, if one did.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// What happened to an [`Order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The manager's command id.
    pub command_id: String,
    /// Done (a delete of something not blocked is done too).
    pub ok: bool,
    /// For the operator: what was done, or why not.
    pub message: String,
    /// The action, if it was valid.
    pub action: Option<Action>,
    /// When it finished.
    pub executed_at: jiff::Timestamp,
    /// Set when a safety rule refused it.
    pub refusal: Option<Refusal>,
}

impl Outcome {
    /// The outcome of `order`, finished at `executed_at`.
    pub fn of(
        order: Order,
        result: Result<String, OrderError>,
        executed_at: jiff::Timestamp,
    ) -> Self {
        let (ok, message, refusal) = match result {
            Ok(message) => (true, message, None),
            Err(e) => (false, e.to_string(), e.refusal().cloned()),
        };
        Self {
            command_id: order.command_id,
            ok,
            message,
            action: order.action,
            executed_at,
            refusal,
        }
    }

    /// As the wire's `CommandResult`.
    pub fn to_proto(&self) -> CommandResult {
        CommandResult {
            command_id: self.command_id.clone(),
            ok: self.ok,
            message: self.message.clone(),
            action: self
                .action
                .map_or(CommandAction::Unspecified, CommandAction::from) as i32,
            executed_at: Some(prost_types::Timestamp {
                seconds: self.executed_at.as_second(),
                nanos: self.executed_at.subsec_nanosecond(),
            }),
            refusal_reason: self
                .refusal
                .as_ref()
                .map(|r| r.reason().to_string())
                .unwrap_or_default(),
        }
    }
}

/// OSSEC's text arguments of a block, validated: what a script gets after
/// the address and what `active-responses.log` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssecArgs {
    /// The user, or `-`.
    pub user: String,
    /// The alert id, or `(from_the_server)`.
    pub alert_id: String,
    /// The rule id, or `(no_rule_id)`.
    pub rule_id: String,
    /// `(agent) location`, or empty.
    pub location: String,
}

/// Alert ids are `<seconds>.<offset>`; allow a little more, nothing that
/// could split a log line or an argument.
fn valid_alert_id(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:()-".contains(&b))
}

/// A location is passed as arguments and logged: printable, bounded.
fn valid_location(s: &str) -> bool {
    s.len() <= 1024 && !s.chars().any(char::is_control)
}

fn rule_text(rule_id: u32) -> String {
    if rule_id == 0 {
        "(no_rule_id)".to_owned()
    } else {
        rule_id.to_string()
    }
}

impl OssecArgs {
    /// Validates an order's arguments and fills in OSSEC's placeholders.
    pub fn of_order(order: &Order) -> Result<Self, OrderError> {
        let user = if order.user.is_empty() {
            "-".to_owned()
        } else {
            order.user.clone()
        };
        if !valid_user(&user) {
            return Err(OrderError::MalformedUser);
        }
        let alert_id = if order.alert_id.is_empty() {
            "(from_the_server)".to_owned()
        } else {
            order.alert_id.clone()
        };
        if !valid_alert_id(&alert_id) {
            return Err(OrderError::MalformedAlertId);
        }
        if !valid_location(&order.location) || !valid_alert_id(&order.agent_id) {
            return Err(OrderError::MalformedLocation);
        }
        let location = if order.location.starts_with('(') || order.agent_id.is_empty() {
            order.location.clone()
        } else if order.location.is_empty() {
            format!("({})", order.agent_id)
        } else {
            format!("({}) {}", order.agent_id, order.location)
        };
        Ok(Self {
            user,
            alert_id,
            rule_id: rule_text(order.rule_id),
            location,
        })
    }

    /// The arguments a block was added with (a delete gets its add's).
    pub fn of_block(block: &Block) -> Self {
        Self {
            user: block.user.clone(),
            alert_id: block.alert_id.clone(),
            rule_id: rule_text(block.rule_id),
            location: block.location.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn commands_become_orders() {
        let c = Command {
            id: "c1".into(),
            response: "route-null".into(),
            action: CommandAction::Add as i32,
            srcip: "198.51.100.7".into(),
            user: String::new(),
            timeout_seconds: 600,
            alert_id: "1700000000.123".into(),
            rule_id: 31151,
            agent_id: "083".into(),
            location: "(web01) 10.0.0.5->/var/log/nginx/access.log".into(),
        };
        let o = Order::from(&c);
        assert_eq!(o.action, Some(Action::Add));
        assert_eq!(o.timeout, Some(Duration::from_secs(600)));
        let o = Order::from(&Command {
            timeout_seconds: 0,
            action: 7,
            ..c.clone()
        });
        assert_eq!(o.timeout, None);
        assert_eq!(o.action, None);
        let o = Order::from(&Command {
            action: CommandAction::Unspecified as i32,
            ..c
        });
        assert_eq!(o.action, None);
    }

    #[test]
    fn actions_map_both_ways() {
        for action in [Action::Add, Action::Delete] {
            assert_eq!(
                Action::from_wire(CommandAction::from(action) as i32),
                Some(action)
            );
        }
        assert_eq!(Action::Add.as_str(), "add");
        assert_eq!(Action::Delete.as_str(), "delete");
    }

    #[test]
    fn outcomes_become_results() {
        let at = jiff::Timestamp::from_millisecond(1_700_000_000_250).unwrap();
        let r = Outcome {
            command_id: "c1".into(),
            ok: false,
            message: "refused".into(),
            action: Some(Action::Delete),
            executed_at: at,
            refusal: None,
        }
        .to_proto();
        assert_eq!(r.action, CommandAction::Delete as i32);
        assert_eq!(r.executed_at.unwrap().seconds, 1_700_000_000);
        assert_eq!(r.executed_at.unwrap().nanos, 250_000_000);
        assert!(!r.ok);
    }

    #[test]
    fn argument_checks_follow_ossec() {
        assert!(valid_user("www-data"));
        assert!(valid_user("j.doe@example.com"));
        assert!(!valid_user("root;reboot"));
        assert!(!valid_user("a b"));
        assert!(valid_alert_id("1700000000.12345"));
        assert!(valid_alert_id("(from_the_server)"));
        assert!(!valid_alert_id("1 2"));
        assert!(!valid_location("x\ny"));
        assert!(valid_location("(web01) 10.0.0.5->/var/log/x"));
    }

    #[test]
    fn unknown_responses_name_the_built_in_ones() {
        assert_eq!(
            OrderError::UnknownResponse("route-nul".into()).to_string(),
            "unknown response \"route-nul\": not built in (route-null, firewall-drop, host-deny) and not in active_response.commands"
        );
    }
}
