//! `ember test` (`POST /v1/test`): code run once in a throwaway sandbox,
//! never deployed.

use crate::daemon::{Daemon, DeployError, DeploySpec};
use ember_api::{validate, FunctionRecord};
use std::sync::Arc;

/// Why `ember test` could not give a report.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Invoke(#[from] crate::invoke::InvokeError),
}

impl Daemon {
    /// Run code once in a throwaway sandbox without deploying it (`ember
    /// test`): its settings are checked and its dependencies installed as
    /// for a deploy, nothing is recorded, and its code leaves the store
    /// again unless a deployed function shares it.
    pub async fn test_run(
        self: &Arc<Self>,
        name: &str,
        spec: DeploySpec,
        event: String,
    ) -> Result<ember_api::Report, TestError> {
        validate::function_name(name).map_err(DeployError::from)?;
        let settings = self.settings(spec.options)?;
        let code = self.store_code(&settings, spec.code).await?;
        let digest = code.digest().clone();
        let now = crate::registry::now_ms();
        let record = FunctionRecord {
            name: name.to_string(),
            runtime: settings.runtime,
            handler: settings.handler,
            timeout_ms: settings.timeout_ms,
            profile: settings.profile,
            backend: settings.backend,
            mode: settings.mode,
            zygote: settings.zygote,
            limits: settings.limits,
            concurrency: settings.concurrency,
            sessions: settings.sessions,
            source: None,
            digest: digest.as_str().to_string(),
            created_at: now,
            updated_at: now,
            paused: false,
            paused_at: None,
        };
        let res = crate::invoke::invoke_throwaway(self.clone(), record, code, event).await;
        self.drop_code_if_unused(digest.as_str());
        Ok(res?)
    }
}
