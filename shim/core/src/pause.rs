//! Pausing a function: an operator's stop switch that keeps the function
//! deployed. While paused, its invocations (and sessions) are refused at
//! once with `function_paused`, before they take a sandbox or a record;
//! invocations already admitted run to the end. The sandboxes bound to it
//! (function zygotes, specialized runners) are released at the pause, as a
//! redeploy releases them. The state is a column of the registry, so it
//! survives a restart and a redeploy; resume clears it.
//!
//! ```text
//! daemon.pause("thumbnail")?;          // Some(record), record.paused
//! daemon.check_not_paused(&record)?;   // Err(InvokeError::Paused { .. })
//! daemon.resume("thumbnail")?;
//! ```

use crate::daemon::Daemon;
use crate::invoke::InvokeError;
use crate::registry::{FunctionRecord, RegistryError};

impl Daemon {
    /// Pause function `name` (idempotent) and release the sandboxes bound
    /// to it. The record as it is now; `None`: no such function.
    pub fn pause(&self, name: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        let Some(rec) = self.registry.set_paused(name, true)? else {
            return Ok(None);
        };
        // Idle bound sandboxes are recycled now; busy ones when their
        // invocation ends (they never come back bound).
        for pool in self.pools.values() {
            pool.unbind(name);
        }
        self.zygotes.released(name);
        tracing::info!(function = name, "paused");
        Ok(Some(rec))
    }

    /// Resume function `name` (idempotent): its invocations run again,
    /// from generic sandboxes until it is warm once more. The record as it
    /// is now; `None`: no such function.
    pub fn resume(&self, name: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        let rec = self.registry.set_paused(name, false)?;
        if rec.is_some() {
            tracing::info!(function = name, "resumed");
        }
        Ok(rec)
    }

    /// The paused check of the invocation path, for anything that would
    /// run `func` (an invocation, opening a session, a session's call):
    /// `Err(InvokeError::Paused)` (code `function_paused`, a refusal: no
    /// record, no id) when it is paused. Reads the record it is given,
    /// nothing else.
    pub fn check_not_paused(&self, func: &FunctionRecord) -> Result<(), InvokeError> {
        match func.paused {
            true => Err(InvokeError::Paused {
                function: func.name.clone(),
            }),
            false => Ok(()),
        }
    }
}
