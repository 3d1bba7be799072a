//! An invocation's way through admission control: its function's gate,
//! then its pool's count (the policy is `crate::admission`'s).

use crate::admission::{AdmitError, FunctionTicket};
use crate::daemon::Daemon;
use crate::pool::PoolTicket;
use ember_api::FunctionRecord;
use std::time::Duration;

/// What holds an admitted invocation's places; dropped when it ends.
pub struct Admitted {
    _function: Option<FunctionTicket>,
    _pool: Option<PoolTicket>,
}

/// Admit an invocation of `func`: through its function's gate (waiting
/// for a slot), then into its pool's count. A function without a pool is
/// let through: the invocation fails on that right after.
pub async fn admit_invocation(
    daemon: &Daemon,
    func: &FunctionRecord,
) -> Result<Admitted, AdmitError> {
    let timeout = Duration::from_millis(daemon.settings.pools.queue_timeout_ms);
    let function = daemon.gates.enter(func, timeout).await?;
    let pool = match daemon.pool(func.runtime, func.backend) {
        Some(p) => Some(p.admit()?),
        None => None,
    };
    Ok(Admitted {
        _function: function,
        _pool: pool,
    })
}
