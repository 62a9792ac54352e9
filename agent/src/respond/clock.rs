//! The time blocks expire by, as a parameter of the responder: the one
//! clock of `palisade_common` (the daemon reads the system clock; tests
//! move a manual one).

pub use palisade_common::clock::{BoxFuture, Clock, ManualClock, SystemClock};
