//! The exit codes every Palisade program uses: 0 success, 1 a runtime
//! failure, 64 a usage or configuration error (BSD `EX_USAGE`), so scripts
//! and systemd tell a typo from an outage the same way for each binary.

use std::process::ExitCode;

/// How a program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success,
    /// Something failed at run time (the manager unreachable, a disk error).
    Failure,
    /// Bad flags, arguments or configuration (`EX_USAGE`).
    Usage,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 64,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_fixed() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Failure.code(), 1);
        assert_eq!(Exit::Usage.code(), 64);
    }
}
