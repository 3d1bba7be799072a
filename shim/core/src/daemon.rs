//! The daemon: startup (lock, registry, store, recovery of a previous
//! run's sandboxes, pools), deploy/delete, and orderly shutdown.

use crate::pool::Pool;
use crate::registry::{FunctionSettings, Registry, RegistryError};
use crate::settings::Settings;
use ember_api::validate::{self, Invalid};
use ember_api::{
    Backend, DeployOptions, ErrorCode, FunctionLimits, FunctionRecord, Language, Mode, ZygoteState,
};
use ember_injector::{CodeStore, Digest, Pin, StoreError};
use ember_profiles::Profile;
use ember_runtimes::cgroup::CgroupLayout;
use ember_runtimes::language::build::{BuildConfig, BuildError};
use nix::fcntl::Flock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another emberd already uses state dir {0}")]
    Locked(PathBuf),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// Deploy builds running at once (each may take its memory and disk budget).
pub(crate) const MAX_BUILDS: usize = 2;

/// How a deploy brings its code.
pub enum CodeSource {
    TarGz(bytes::Bytes),
    Path(PathBuf),
    /// A git repository's commit (Unix socket only), see `git.rs`.
    Git(ember_api::function::GitCode),
}

pub struct DeploySpec {
    pub options: DeployOptions,
    pub code: CodeSource,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("runtime {runtime} is not available: {why}")]
    Unavailable { runtime: Language, why: String },
    #[error(transparent)]
    Profile(#[from] ember_profiles::ProfileError),
    /// The node runner starts before any function is known, under the
    /// base filter; it cannot add a profile's filters itself.
    #[error("profile {0:?} is not available for runtime node (only \"default\"): Node.js cannot install seccomp filters on itself once started")]
    NodeProfile(String),
    #[error("backend {backend:?} is not running in this emberd (running: {running}; start it with --backend)")]
    BackendNotRunning { backend: String, running: String },
    #[error("the function has a requirements.txt, but this emberd installs packages only from an operator's wheel directory (emberd --wheels-dir): deploy builds have no network")]
    NoWheels,
    #[error("code path {} must be absolute", .0.display())]
    RelativePath(PathBuf),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("handler {handler:?}: the code has {looked_for}")]
    NoHandler { handler: String, looked_for: String },
    #[error("deploy task failed: {0}")]
    Task(tokio::task::JoinError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Requirements(#[from] ember_runtimes::language::deps::DepsError),
}

impl DeployError {
    /// The API's code for this error.
    pub fn code(&self) -> ErrorCode {
        use ember_injector::StoreError as S;
        use ember_runtimes::language::build::BuildError as B;
        match self {
            DeployError::Invalid(_)
            | DeployError::Unavailable { .. }
            | DeployError::Profile(_)
            | DeployError::NodeProfile(_)
            | DeployError::BackendNotRunning { .. }
            | DeployError::NoWheels
            | DeployError::RelativePath(_) => ErrorCode::InvalidRequest,
            DeployError::Requirements(_) => ErrorCode::InvalidRequirements,
            DeployError::Git(e) => e.code(),
            DeployError::NoHandler { .. } => ErrorCode::InvalidCode,
            DeployError::Build(B::Failed { .. }) => ErrorCode::BuildFailed,
            DeployError::Build(B::Timeout(_)) => ErrorCode::BuildTimeout,
            DeployError::Build(B::Oom(_)) => ErrorCode::BuildOom,
            DeployError::Build(B::Pids(_)) => ErrorCode::BuildPids,
            DeployError::Build(B::DiskFull(_)) => ErrorCode::BuildDiskFull,
            DeployError::Build(B::Sandbox(_) | B::Dir { .. }) => ErrorCode::SandboxFailed,
            DeployError::Store(S::TooLarge { .. } | S::TooManyEntries { .. }) => {
                ErrorCode::PayloadTooLarge
            }
            DeployError::Store(S::Io { .. }) | DeployError::Registry(_) | DeployError::Task(_) => {
                ErrorCode::Internal
            }
            DeployError::Store(_) => ErrorCode::InvalidCode,
        }
    }
}

pub struct Daemon {
    pub(crate) settings: Settings,
    pub(crate) registry: Registry,
    /// Invocation records (same database, table `invocations`).
    pub(crate) history: crate::history::History,
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) store: Arc<CodeStore>,
    /// One pool per (language runtime, backend).
    pub(crate) pools: BTreeMap<(Language, Backend), Arc<Pool>>,
    /// Backends this daemon runs (flags, then the config file's).
    pub(crate) backends: Vec<Backend>,
    /// Each runtime's default backend.
    pub(crate) runtime_backends: BTreeMap<Language, Backend>,
    /// Runtimes without a pool, and why (not enabled, no interpreter).
    pub(crate) unavailable: BTreeMap<Language, String>,
    /// How deploy builds run, per backend.
    pub(crate) builds: BTreeMap<Backend, BuildConfig>,
    /// Deploy builds running at once.
    pub(crate) build_slots: tokio::sync::Semaphore,
    /// Which fork-mode functions get function zygotes, and how they fared.
    pub(crate) zygotes: crate::zygotes::ZygoteBook,
    /// The gates of functions deployed with `max_concurrency`.
    pub(crate) gates: crate::admission::Gates,
    /// Open sessions.
    pub(crate) sessions: crate::sessions::Sessions,
    pub(crate) cgroups: CgroupLayout,
    pub(crate) _lock: Flock<std::fs::File>,
}

impl Daemon {
    /// Every deployed function, by name.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, RegistryError> {
        self.registry.list()
    }

    /// Function `name`, if deployed.
    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        self.registry.get(name)
    }

    /// The newest `limit` invocation records (of `function`, started after
    /// `since_ms`), without stdout and stderr unless `output`.
    /// An invocation answered before this call shows with its outcome; this
    /// waits for the history writer, so call it off async workers.
    pub fn records(
        &self,
        filter: &crate::history::Filter<'_>,
        limit: usize,
        output: bool,
    ) -> Result<Vec<ember_api::InvocationRecord>, crate::history::HistoryError> {
        self.history.list_where(filter, limit, output)
    }

    /// The Prometheus exposition text.
    pub fn metrics_text(&self) -> String {
        let pools: Vec<_> = self.pools().map(|p| p.status()).collect();
        let mut text = self.metrics.render(&pools);
        crate::metrics::render_history(&self.history.status(), &mut text);
        let open = self.sessions.open_by_function();
        crate::metrics::render_sessions(&self.metrics, &open, &mut text);
        if let Ok(functions) = self.registry.list() {
            crate::metrics::render_paused(&functions, &mut text);
        }
        text
    }

    /// Whether invocation records are written, and how many wait.
    pub fn history_status(&self) -> crate::history::HistoryStatus {
        self.history.status()
    }

    /// Backends this daemon runs (flags, then the config file's).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The largest deploy upload (tar.gz) accepted.
    pub fn max_code_bytes(&self) -> usize {
        self.settings.max_code_bytes
    }

    /// The largest event accepted (a function may lower it).
    pub fn max_event_bytes(&self) -> usize {
        self.settings.max_event_bytes
    }

    /// The pool of `runtime` on `backend` (the runtime's default backend
    /// if `None`).
    pub fn pool(&self, runtime: Language, backend: Option<Backend>) -> Option<&Arc<Pool>> {
        let backend = backend.unwrap_or(self.default_backend(runtime));
        self.pools.get(&(runtime, backend))
    }

    /// The zygote state of `func`'s current deploy.
    pub fn zygote_state(&self, func: &FunctionRecord) -> ZygoteState {
        if !self.function_zygotes(func) {
            return ZygoteState::Off;
        }
        self.zygotes.state(&func.binding_key())
    }

    /// Whether `func`'s sandboxes get a function zygote once warm.
    pub fn function_zygotes(&self, func: &FunctionRecord) -> bool {
        func.mode == Mode::Fork && func.zygote && self.settings.function_zygotes
    }

    /// The cgroup layout of this host (for sandboxes adopted from others).
    pub fn cgroups(&self) -> CgroupLayout {
        self.cgroups.clone()
    }

    /// This daemon's instance tag (its sandboxes' id prefix).
    pub fn tag(&self) -> &str {
        &self.settings.tag
    }

    /// The language runtimes this daemon runs pools for.
    pub fn runtimes(&self) -> Vec<Language> {
        let mut v: Vec<Language> = self.pools.keys().map(|(rt, _)| *rt).collect();
        v.dedup();
        v
    }

    /// The backend of `runtime`'s functions deployed without one.
    pub fn default_backend(&self, runtime: Language) -> Backend {
        self.runtime_backends
            .get(&runtime)
            .copied()
            .unwrap_or(self.settings.default_backend())
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// Store the code and record the function; returns the record and
    /// whether it is new.
    pub async fn deploy(
        &self,
        name: &str,
        spec: DeploySpec,
    ) -> Result<(FunctionRecord, bool), DeployError> {
        validate::function_name(name)?;
        let settings = self.settings(spec.options)?;
        // Pinned until the registry refers to it: a delete of another
        // function with the same code cannot remove it in between.
        let (pin, source) = self.store_code_from(&settings, spec.code).await?;
        let code = self.hold_code(pin);
        let digest = code.digest().clone();
        let old = self.registry.get(name)?;
        let rec = self
            .registry
            .upsert(name, &settings, digest.as_str(), source.as_ref())?;
        drop(code);
        if let Some(old) = old {
            self.drop_code_if_unused(&old.digest);
        }
        // Sandboxes bound to the previous deploy will never serve again.
        for pool in self.pools.values() {
            pool.unbind(name);
        }
        self.zygotes.forget(name, None);
        tracing::info!(function = name, digest = %digest, "deployed");
        Ok(rec)
    }

    /// How deploy builds run on `backend`.
    pub(crate) fn build_config(&self, backend: Backend) -> Option<&BuildConfig> {
        self.builds.get(&backend)
    }

    /// Fill in defaults and check every setting before any code is stored.
    pub fn settings(&self, o: DeployOptions) -> Result<FunctionSettings, DeployError> {
        let runtime = validate::runtime(o.runtime.as_deref().unwrap_or("python3"))?;
        if let Some(why) = self.unavailable.get(&runtime) {
            return Err(DeployError::Unavailable {
                runtime,
                why: why.clone(),
            });
        }
        let mode = match o.mode.as_deref() {
            None => runtime.default_mode(),
            Some(m) => validate::mode(m, runtime)?,
        };
        let limits = self.limits(&o);
        let settings = FunctionSettings {
            handler: o
                .handler
                .unwrap_or_else(|| runtime.default_handler().into()),
            runtime,
            timeout_ms: o.timeout_ms.unwrap_or(self.settings.default_timeout_ms),
            profile: o.profile.unwrap_or_else(|| "default".into()),
            backend: o
                .backend
                .as_deref()
                .map(|b| self.running_backend(b))
                .transpose()?,
            mode,
            zygote: o.zygote.unwrap_or(true),
            limits,
            concurrency: ember_api::Concurrency {
                max_concurrency: o.max_concurrency,
                max_queue: o.max_queue,
            },
            sessions: ember_api::SessionPolicy {
                session_idle_s: o.session_idle_s,
                session_lifetime_s: o.session_lifetime_s,
                max_sessions: o.max_sessions,
            },
        };
        validate::handler(&settings.handler, runtime)?;
        validate::timeout_ms(settings.timeout_ms)?;
        Profile::by_name(&settings.profile)?;
        if runtime == Language::Node && settings.profile != "default" {
            return Err(DeployError::NodeProfile(settings.profile));
        }
        validate::limits(&settings.limits, &self.settings.caps)?;
        validate::concurrency(&settings.concurrency)?;
        validate::session_policy(&settings.sessions)?;
        Ok(settings)
    }

    /// The deploy's limits, defaults filled in.
    fn limits(&self, o: &DeployOptions) -> FunctionLimits {
        let d = FunctionLimits::default();
        FunctionLimits {
            memory_mb: o.memory_mb.unwrap_or(d.memory_mb),
            pids: o.pids.unwrap_or(d.pids),
            cpu_shares: o.cpu_shares.unwrap_or(d.cpu_shares),
            max_output_bytes: o
                .max_output_bytes
                .unwrap_or(self.settings.max_output_bytes as u64),
            max_event_bytes: o
                .max_event_bytes
                .unwrap_or(self.settings.max_event_bytes as u64),
        }
    }

    /// Backend `name`, if this daemon runs it.
    fn running_backend(&self, name: &str) -> Result<Backend, DeployError> {
        match self.backends.iter().find(|b| b.as_str() == name) {
            Some(b) => Ok(*b),
            None => Err(self.not_running(name)),
        }
    }

    /// Backend `name` is not one this daemon runs.
    pub(crate) fn not_running(&self, name: &str) -> DeployError {
        let running: Vec<&str> = self.backends.iter().map(|b| b.as_str()).collect();
        DeployError::BackendNotRunning {
            backend: name.to_string(),
            running: running.join(", "),
        }
    }

    pub fn delete_function(&self, name: &str) -> Result<bool, RegistryError> {
        let old = self.registry.get(name)?;
        let deleted = self.registry.delete(name)?;
        if let Some(old) = old {
            self.drop_code_if_unused(&old.digest);
            for pool in self.pools.values() {
                pool.unbind(name);
            }
            self.zygotes.forget(name, None);
            tracing::info!(function = name, "deleted");
        }
        Ok(deleted)
    }

    /// Remove code no function refers to, now or (if an invocation or a
    /// deploy holds it) when the last of them lets go.
    pub(crate) fn drop_code_if_unused(&self, digest: &str) {
        let Some(d) = Digest::parse(digest) else {
            return;
        };
        // On a registry error, keep the code: the next start collects it.
        let in_use = || !matches!(self.registry.digest_in_use(digest), Ok(false));
        match self.store.remove_unused(&d, in_use) {
            Ok(true) => tracing::info!(digest, "removed unused code"),
            Ok(false) => {}
            Err(e) => tracing::warn!(digest, "removing unused code: {e}"),
        }
    }

    /// Keep `pin`'s code in the store while the hold lives.
    pub fn hold_code(&self, pin: Pin) -> CodeHold<'_> {
        CodeHold {
            daemon: self,
            pin: Some(pin),
        }
    }

    /// Whether shutdown has begun (new invocations are refused).
    pub fn draining(&self) -> bool {
        self.pools.values().any(|p| p.is_closing())
    }
}

/// Code held in the store for an invocation or a deploy. Dropping it
/// removes the code if the function was deleted or redeployed meanwhile
/// (the removal was put off while it was held).
pub struct CodeHold<'a> {
    daemon: &'a Daemon,
    pin: Option<Pin>,
}

impl CodeHold<'_> {
    pub fn digest(&self) -> &Digest {
        self.pin.as_ref().expect("held until dropped").digest()
    }

    /// The pin itself, for a holder that outlives this borrow (a
    /// session); it hands it back with [`Daemon::release_code`].
    pub(crate) fn into_pin(mut self) -> Pin {
        self.pin.take().expect("held until dropped")
    }
}

impl Daemon {
    /// Let go of code held by [`CodeHold::into_pin`]'s pin.
    pub(crate) fn release_code(&self, pin: Pin) {
        if let Some(d) = pin.release() {
            self.drop_code_if_unused(d.as_str());
        }
    }
}

impl Drop for CodeHold<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.pin.take().and_then(Pin::release) {
            self.daemon.drop_code_if_unused(d.as_str());
        }
    }
}

/// Drop stored code that no function refers to.
pub(crate) fn gc_store(registry: &Registry, store: &CodeStore) {
    let Ok(digests) = store.list() else { return };
    for d in digests {
        let in_use = || !matches!(registry.digest_in_use(d.as_str()), Ok(false));
        if let Err(e) = store.remove_unused(&d, in_use) {
            tracing::warn!(digest = d.as_str(), "removing unused code: {e}");
        }
    }
}
