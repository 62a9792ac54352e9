//! What a command does to its address: OSSEC's `add` and `delete`, in one
//! type for the manager (which decides and records it) and the agent
//! (which carries it out), mapped to the wire's `CommandAction` here and
//! nowhere else.

use crate::v1::CommandAction;

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Block (or run a script's add).
    Add,
    /// Lift the block.
    Delete,
}

impl Action {
    /// OSSEC's word for it (`$1` of a script, `active-responses.log`, the
    /// manager's `action` column and its mails).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Delete => "delete",
        }
    }

    /// The action of a wire `Command` (its raw enum value); None for
    /// `UNSPECIFIED` or a value this build does not know.
    pub fn from_wire(action: i32) -> Option<Self> {
        match CommandAction::try_from(action) {
            Ok(CommandAction::Add) => Some(Self::Add),
            Ok(CommandAction::Delete) => Some(Self::Delete),
            Ok(CommandAction::Unspecified) | Err(_) => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Action> for CommandAction {
    fn from(action: Action) -> Self {
        match action {
            Action::Add => Self::Add,
            Action::Delete => Self::Delete,
        }
    }
}

/// Whether a user name may travel in a `Command` (OSSEC's `expect user`
/// characters: letters, digits and `._@?-`, at most 64). The user name
/// comes from a log line the attacker wrote: the manager leaves out one
/// that fails (and refuses a response that needs it), and the agent
/// refuses an order that carries one.
pub fn is_valid_user(user: &str) -> bool {
    user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@?-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        for a in [Action::Add, Action::Delete] {
            assert_eq!(Action::from_wire(CommandAction::from(a) as i32), Some(a));
        }
        assert_eq!(Action::from_wire(CommandAction::Unspecified as i32), None);
        assert_eq!(Action::from_wire(99), None);
    }
}
