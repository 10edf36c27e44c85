//! A fatal invariant broken: which, when, and what happened.

use serde::Serialize;

use crate::clock::Ms;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub at: Ms,
    pub message: String,
}
