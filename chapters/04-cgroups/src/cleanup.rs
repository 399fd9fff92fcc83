//! Cleaning up after a container, whatever happened to it.

use anyhow::Result;

/// Combines what running a container gave with what cleaning up after it (`what`) gave:
/// the container's own error comes first, and a failed clean-up is never hidden.
pub fn after_cleanup<T>(result: Result<T>, cleanup: Result<()>, what: &str) -> Result<T> {
    match (result, cleanup) {
        (result, Ok(())) => result,
        (Ok(_), Err(cleanup)) => Err(cleanup.context(format!("{what} failed"))),
        (Err(err), Err(cleanup)) => {
            Err(err.context(format!("and then {what} failed: {cleanup:#}")))
        }
    }
}
