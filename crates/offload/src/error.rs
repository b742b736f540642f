//! The crate's error types.

use datapath::PortId;
use std::fmt;

/// Something flower cannot express: the flow stays in software with this reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unsupported {
    /// A matched field (or bits of one) that flower has no key for.
    Match {
        /// The FlowKey field.
        field: &'static str,
    },
    /// An action with no tc equivalent.
    Action {
        /// The action, as the datapath names it.
        action: String,
    },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Match { field } => write!(f, "unsupported match: {field}"),
            Unsupported::Action { action } => write!(f, "unsupported action: {action}"),
        }
    }
}

impl std::error::Error for Unsupported {}

/// Errors of the translation and validation layers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// Flower cannot express the flow.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The flow names a port the port table does not know.
    #[error("unknown port {0}")]
    UnknownPort(PortId),
}

impl OffloadError {
    /// Shorthand for an unsupported match field.
    pub fn field(field: &'static str) -> Self {
        Unsupported::Match { field }.into()
    }

    /// Shorthand for an unsupported action.
    pub fn action(action: impl Into<String>) -> Self {
        Unsupported::Action {
            action: action.into(),
        }
        .into()
    }
}
