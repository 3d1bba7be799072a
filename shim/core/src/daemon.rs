//! The daemon: startup (lock, registry, store, recovery of a previous
//! run's sandboxes, pools), deploy/delete, and orderly shutdown.

use crate::config::DaemonConfig;
use crate::pool::{Pool, PoolSettings};
use crate::registry::{FunctionLimits, FunctionRecord, FunctionSettings, Registry, RegistryError};
use crate::validate;
use ember_injector::{CodeStore, Digest, Pin, StoreError};
use ember_profiles::{Limits, Profile};
use ember_proto::Mode;
use ember_runtimes::build::{BuildConfig, BuildError};
use ember_runtimes::cgroup::CgroupLayout;
use ember_runtimes::SandboxConfig;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another emberd is already serving on {0}")]
    SocketInUse(PathBuf),
    #[error("dashboard address {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "dashboard address {0} is not a loopback address: the dashboard has no \
         authentication and can deploy and invoke, so it listens on 127.0.0.1 or ::1 only \
         (reach it from elsewhere through an SSH tunnel or an authenticating proxy)"
    )]
    HttpNotLoopback(std::net::SocketAddr),
}

/// Deploy builds running at once (each may take its memory and disk budget).
const MAX_BUILDS: usize = 2;

/// How a deploy brings its code.
pub enum CodeSource {
    TarGz(bytes::Bytes),
    Path(PathBuf),
}

/// Deploy settings as a client gives them (query string, JSON body or the
/// CLI's manifest); anything left out gets the daemon's default.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployOptions {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub timeout_ms: Option<u64>,
    pub profile: Option<String>,
    /// Backend of the function's sandboxes (default: the runtime's, from
    /// the config file, else emberd's first).
    pub backend: Option<String>,
    /// `fork` or `specialized` (default: fork for python3, specialized for
    /// node, which cannot fork).
    pub mode: Option<String>,
    /// Fork mode: once the function is warm, fork its workers from a
    /// function zygote that imported the handler once (default true;
    /// false: every invocation imports it afresh).
    pub zygote: Option<bool>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub max_output_bytes: Option<u64>,
    pub max_event_bytes: Option<u64>,
}

pub struct DeploySpec {
    pub options: DeployOptions,
    pub code: CodeSource,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Requirements(#[from] ember_runtimes::deps::DepsError),
}

/// Why `ember test` could not give a report.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Invoke(#[from] crate::invoke::InvokeError),
}

pub struct Daemon {
    pub cfg: DaemonConfig,
    pub registry: Registry,
    /// Invocation records (same database, table `invocations`).
    pub history: crate::history::History,
    pub metrics: crate::metrics::Metrics,
    pub store: Arc<CodeStore>,
    pub tag: String,
    /// One pool per (language runtime, backend).
    pools: BTreeMap<(String, String), Arc<Pool>>,
    /// Backends this daemon runs (flags, then the config file's).
    pub backends: Vec<String>,
    /// Each runtime's default backend.
    runtime_backends: BTreeMap<String, String>,
    /// Runtimes without a pool, and why (not enabled, no interpreter).
    unavailable: BTreeMap<String, String>,
    /// How deploy builds run, per backend.
    builds: BTreeMap<String, BuildConfig>,
    /// Deploy builds running at once.
    pub(crate) build_slots: tokio::sync::Semaphore,
    /// Which fork-mode functions get function zygotes, and how they fared.
    pub zygotes: crate::zygotes::ZygoteBook,
    cgroups: CgroupLayout,
    _lock: Flock<std::fs::File>,
}

impl Daemon {
    /// Open the state dir, clean up after any previous run, and start the
    /// pools (their refill runs in the background).
    pub async fn start(cfg: DaemonConfig) -> Result<Arc<Daemon>, DaemonError> {
        let sd = |source| DaemonError::StateDir {
            path: cfg.state_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&cfg.state_dir).map_err(sd)?;
        // Functions' code and the registry are nobody else's business on
        // the host; sandboxes see code only through their own mounts.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(sd)?;
        }
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.lock_path())
            .map_err(sd)?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| DaemonError::Locked(cfg.state_dir.clone()))?;

        let agent = cfg.resolve_agent().map_err(DaemonError::Config)?;
        let tag = cfg.instance_tag();
        let file = crate::config_file::ConfigFile::load(cfg.config.as_deref())
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        // The flags' backends, then any the config file names for a runtime.
        let mut names: Vec<String> = Vec::new();
        for name in &cfg.backend {
            if names.contains(name) {
                return Err(DaemonError::Config(format!("backend {name} given twice")));
            }
            names.push(name.clone());
        }
        for section in file.pools.values() {
            if let Some(b) = &section.backend {
                if !names.contains(b) {
                    names.push(b.clone());
                }
            }
        }
        let mut backends = Vec::new();
        for name in &names {
            backends.push(
                ember_runtimes::backend_by_name(name, &cfg.backend_options(name))
                    .map_err(|e| DaemonError::Config(e.to_string()))?,
            );
        }
        let cgroups = CgroupLayout::detect();
        let registry = Registry::open(&cfg.db_path())?;
        let (history, interrupted) =
            crate::history::History::open(&cfg.db_path(), cfg.invocation_retention)
                .map_err(|e| DaemonError::Config(e.to_string()))?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "invocations of the previous run were cut off; recorded as interrupted"
            );
        }
        let store = Arc::new(CodeStore::open(&cfg.code_dir())?);

        let daemon_prefix = format!("ember-{tag}");
        recover(&cgroups, &daemon_prefix, &cfg).await;
        gc_store(&registry, &store);
        let userns = cfg.userns_range();
        userns
            .check_host()
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        // Removed again if the start fails from here on.
        let mut made = StartGuard {
            run_dir: cfg.run_dir(),
            cgroup: format!("/ember/{tag}"),
            cgroups: cgroups.clone(),
            armed: true,
        };
        let files = prepare_run_dir(&cfg, &agent)?;
        // All sandboxes and builds of this daemon together.
        cgroups
            .set_budget(&format!("/ember/{tag}"), cfg.sandboxes_budget())
            .map_err(|e| DaemonError::Config(format!("the sandboxes' cgroup budget: {e}")))?;

        // A fresh boot id keeps new sandbox ids distinct from any leftover.
        let boot = format!(
            "{:04x}",
            (crate::registry::now_ms() as u64 ^ u64::from(std::process::id())) & 0xffff
        );
        let mut pools = BTreeMap::new();
        let mut runtime_backends = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        for rt in validate::RUNTIMES {
            if !cfg.runtimes.iter().any(|r| r == rt) {
                unavailable.insert(
                    rt.to_string(),
                    "not enabled in this emberd (start it with --runtimes)".to_string(),
                );
                continue;
            }
            let language = ember_runtimes::Language::by_runtime(rt)
                .ok_or_else(|| DaemonError::Config(format!("runtime {rt} has no language")))?;
            let path = match language {
                ember_runtimes::Language::Python => cfg.python.clone(),
                ember_runtimes::Language::Node => cfg.node.clone(),
            };
            // The sandboxes bind the host's /usr: no interpreter on the
            // host, no pool (deploys of that runtime say why).
            if !std::path::Path::new(&path).exists() {
                tracing::warn!(runtime = rt, interpreter = %path, "interpreter not installed; no pool for this runtime");
                unavailable.insert(
                    rt.to_string(),
                    format!("its interpreter {path} is not installed"),
                );
                continue;
            }
            let section = file.pools.get(*rt).cloned().unwrap_or_default();
            let default_backend = section
                .backend
                .clone()
                .unwrap_or_else(|| cfg.default_backend().to_string());
            runtime_backends.insert(rt.to_string(), default_backend);
            let settings = PoolSettings {
                min_warm: section.min_warm.unwrap_or(cfg.pool_size),
                max_warm: section
                    .max_warm
                    .unwrap_or(cfg.pool_max_warm)
                    .max(section.min_warm.unwrap_or(cfg.pool_size)),
                headroom: section.headroom.unwrap_or(cfg.pool_headroom),
                max: section.max.unwrap_or(cfg.max_sandboxes),
                queue_timeout: Duration::from_millis(cfg.queue_timeout_ms),
                idle_trim: Duration::from_millis(section.idle_trim_ms.unwrap_or(cfg.idle_trim_ms)),
                specialized_max_invocations: file
                    .specialized
                    .max_invocations
                    .unwrap_or(cfg.specialized_max_invocations),
                specialized_idle: Duration::from_millis(
                    file.specialized.idle_ms.unwrap_or(cfg.specialized_idle_ms),
                ),
                freeze_after: Duration::from_millis(cfg.freeze_after_ms),
            };
            for backend in &backends {
                let sandbox_cfg = SandboxConfig {
                    backend: backend.clone(),
                    tmpfs_bytes: cfg.tmpfs_mb * 1024 * 1024,
                    files: files.clone(),
                    interpreter: ember_runtimes::Interpreter {
                        language,
                        path: path.clone(),
                    },
                    bundles_dir: cfg.bundles_dir(),
                    host_dirs: cfg.host_dirs(),
                    // gVisor runs its Sentry as the host's nobody in a
                    // user namespace of its own whatever the bundle says; a
                    // mapping would only move its file proxy off root, and
                    // with it access to the store (docs/isolation.md).
                    userns: (backend.injection() == ember_runtimes::Injection::MountNamespace)
                        .then(|| (userns, PathBuf::from(ember_runtimes::userns::LOCK_DIR))),
                    cgroup_parent: format!("/ember/{tag}"),
                    profile: Profile::by_name(&cfg.sandbox_profile)
                        .map_err(|e| DaemonError::Config(e.to_string()))?,
                    limits: Limits {
                        memory_bytes: cfg.sandbox_memory_mb * 1024 * 1024,
                        pids: cfg.sandbox_pids,
                    },
                    ready_timeout: Duration::from_secs(30),
                };
                let short = rt.trim_end_matches(char::is_numeric);
                let pool = Pool::new(
                    rt,
                    sandbox_cfg,
                    cgroups.clone(),
                    format!("{daemon_prefix}-{boot}-{short}-{}", backend.name()),
                    settings,
                );
                tokio::spawn(pool.clone().refill_loop());
                pools.insert((rt.to_string(), backend.name().to_string()), pool);
            }
        }
        tracing::info!(
            state_dir = %cfg.state_dir.display(),
            tag = %tag,
            agent = %agent.display(),
            functions = registry.list().map(|l| l.len()).unwrap_or(0),
            "emberd started"
        );
        let builds = backends
            .iter()
            .map(|backend| {
                let host_kernel = backend.injection() == ember_runtimes::Injection::MountNamespace;
                let build = BuildConfig {
                    backend: backend.clone(),
                    files: files.clone(),
                    builds_dir: cfg.builds_dir(),
                    cgroup_parent: format!("/ember/{tag}"),
                    userns: host_kernel
                        .then(|| (userns, PathBuf::from(ember_runtimes::userns::LOCK_DIR))),
                    profile: Profile::by_name(&cfg.sandbox_profile)
                        .map_err(|e| DaemonError::Config(e.to_string()))?,
                    limits: crate::deploy::build_limits(&cfg),
                    wheels: crate::deploy::wheels(&cfg),
                };
                Ok((backend.name().to_string(), build))
            })
            .collect::<Result<BTreeMap<_, _>, DaemonError>>()?;
        made.armed = false;
        Ok(Arc::new(Daemon {
            builds,
            build_slots: tokio::sync::Semaphore::new(MAX_BUILDS),
            cfg,
            backends: names,
            runtime_backends,
            unavailable,
            registry,
            history,
            metrics: crate::metrics::Metrics::default(),
            store,
            tag,
            pools,
            zygotes: Default::default(),
            cgroups,
            _lock: lock,
        }))
    }

    /// The pool of `runtime` on `backend` (the runtime's default backend
    /// if `None`).
    pub fn pool(&self, runtime: &str, backend: Option<&str>) -> Option<&Arc<Pool>> {
        let backend = backend.unwrap_or(self.default_backend(runtime));
        self.pools.get(&(runtime.to_string(), backend.to_string()))
    }

    /// The zygote state of `func`'s current deploy.
    pub fn zygote_state(&self, func: &FunctionRecord) -> crate::zygotes::ZygoteState {
        if !self.function_zygotes(func) {
            return crate::zygotes::ZygoteState::Off;
        }
        self.zygotes.state(&func.binding_key())
    }

    /// Whether `func`'s sandboxes get a function zygote once warm.
    pub fn function_zygotes(&self, func: &FunctionRecord) -> bool {
        func.mode == Mode::Fork && func.zygote && !self.cfg.no_function_zygotes
    }

    /// The cgroup layout of this host (for sandboxes adopted from others).
    pub fn cgroups(&self) -> CgroupLayout {
        self.cgroups.clone()
    }

    /// The language runtimes this daemon runs pools for.
    pub fn runtimes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pools.keys().map(|(rt, _)| rt.as_str()).collect();
        v.dedup();
        v
    }

    /// The backend of `runtime`'s functions deployed without one.
    pub fn default_backend(&self, runtime: &str) -> &str {
        self.runtime_backends
            .get(runtime)
            .map(String::as_str)
            .unwrap_or(self.cfg.default_backend())
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
        validate::function_name(name).map_err(DeployError::Invalid)?;
        let settings = self.settings(spec.options)?;
        // Pinned until the registry refers to it: a delete of another
        // function with the same code cannot remove it in between.
        let code = self.hold_code(self.store_code(&settings, spec.code).await?);
        let digest = code.digest().clone();
        let old = self.registry.get(name)?;
        let rec = self.registry.upsert(name, &settings, digest.as_str())?;
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

    /// Run code once in a throwaway sandbox without deploying it (`ember
    /// test`): its settings are checked and its dependencies installed as
    /// for a deploy, nothing is recorded, and its code leaves the store
    /// again unless a deployed function shares it.
    pub async fn test_run(
        self: &Arc<Self>,
        name: &str,
        spec: DeploySpec,
        event: String,
    ) -> Result<crate::invoke::Report, TestError> {
        validate::function_name(name).map_err(DeployError::Invalid)?;
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
            digest: digest.as_str().to_string(),
            created_at: now,
            updated_at: now,
        };
        let res = crate::invoke::invoke_throwaway(self.clone(), record, code, event).await;
        self.drop_code_if_unused(digest.as_str());
        Ok(res?)
    }

    /// How deploy builds run on `backend`.
    pub(crate) fn build_config(&self, backend: &str) -> Option<&BuildConfig> {
        self.builds.get(backend)
    }

    /// Fill in defaults and check every setting before any code is stored.
    pub fn settings(&self, o: DeployOptions) -> Result<FunctionSettings, DeployError> {
        let d = FunctionLimits::default();
        let cfg = &self.cfg;
        let runtime = o.runtime.unwrap_or_else(|| "python3".into());
        validate::runtime(&runtime).map_err(DeployError::Invalid)?;
        if let Some(why) = self.unavailable.get(&runtime) {
            return Err(DeployError::Invalid(format!(
                "runtime {runtime} is not available: {why}"
            )));
        }
        let language = ember_runtimes::Language::by_runtime(&runtime)
            .ok_or_else(|| DeployError::Invalid(format!("unknown runtime {runtime:?}")))?;
        let mode = match o.mode.as_deref() {
            None if language.can_fork() => Mode::Fork,
            None => Mode::Specialized,
            Some(m) => {
                validate::mode(m, &runtime, language.can_fork()).map_err(DeployError::Invalid)?
            }
        };
        let settings = FunctionSettings {
            handler: o
                .handler
                .unwrap_or_else(|| validate::default_handler(&runtime).into()),
            runtime,
            timeout_ms: o.timeout_ms.unwrap_or(cfg.default_timeout_ms),
            profile: o.profile.unwrap_or_else(|| "default".into()),
            backend: o.backend,
            mode,
            zygote: o.zygote.unwrap_or(true),
            limits: FunctionLimits {
                memory_mb: o.memory_mb.unwrap_or(d.memory_mb),
                pids: o.pids.unwrap_or(d.pids),
                cpu_shares: o.cpu_shares.unwrap_or(d.cpu_shares),
                max_output_bytes: o.max_output_bytes.unwrap_or(cfg.max_output_bytes as u64),
                max_event_bytes: o.max_event_bytes.unwrap_or(cfg.max_event_bytes as u64),
            },
        };
        validate::handler(&settings.handler, language).map_err(DeployError::Invalid)?;
        validate::timeout_ms(settings.timeout_ms).map_err(DeployError::Invalid)?;
        validate::profile(&settings.profile).map_err(DeployError::Invalid)?;
        if language == ember_runtimes::Language::Node && settings.profile != "default" {
            // The node runner starts before any function is known, under
            // the base filter; it cannot add a profile's filters itself.
            return Err(DeployError::Invalid(format!(
                "profile {:?} is not available for runtime node (only \"default\"): Node.js cannot install seccomp filters on itself once started",
                settings.profile
            )));
        }
        if let Some(b) = &settings.backend {
            if !self.backends.contains(b) {
                return Err(DeployError::Invalid(format!(
                    "backend {b:?} is not running in this emberd (running: {}; start it with --backend)",
                    self.backends.join(", ")
                )));
            }
        }
        validate::limits(&settings.limits, &cfg.function_caps()).map_err(DeployError::Invalid)?;
        Ok(settings)
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
    fn drop_code_if_unused(&self, digest: &str) {
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

    /// Stop: refuse new invocations, let running ones finish (up to
    /// `grace`, or until `hurry` resolves), interrupt the rest, destroy
    /// every sandbox, remove this daemon's cgroups.
    pub async fn shutdown(&self, grace: Duration, hurry: impl std::future::Future<Output = ()>) {
        // All at once, so no pool takes new work while another drains.
        for pool in self.pools.values() {
            pool.close();
        }
        let drained = async {
            for pool in self.pools.values() {
                pool.wait_drained(grace).await;
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(grace, drained) => {}
            _ = hurry => tracing::info!("second signal: not waiting for running invocations"),
        }
        // Concurrently: one pool's teardown must not delay interrupting
        // another's invocations.
        let mut finishing = tokio::task::JoinSet::new();
        for pool in self.pools.values() {
            let pool = pool.clone();
            finishing.spawn(async move { pool.finish().await });
        }
        while finishing.join_next().await.is_some() {}
        self.history.flush();
        let left = self.cgroups.remove_tree(&format!("/ember/{}", self.tag));
        for p in left {
            tracing::warn!(cgroup = %p.display(), "could not remove cgroup");
        }
        let run = self.cfg.run_dir();
        if let Err(e) = std::fs::remove_dir_all(&run) {
            tracing::warn!(dir = %run.display(), "removing the run directory: {e}");
        }
        tracing::info!("emberd stopped");
    }
}

/// What a start made before it failed (the run directory, the daemon's
/// cgroup), removed on drop unless disarmed: a daemon that cannot start
/// leaves nothing behind.
struct StartGuard {
    run_dir: PathBuf,
    cgroup: String,
    cgroups: CgroupLayout,
    armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.run_dir);
            self.cgroups.remove_tree(&self.cgroup);
        }
    }
}

/// Create the run directory (searchable by all, so sandboxes in user
/// namespaces reach their bundles) with the files every sandbox binds.
fn prepare_run_dir(
    cfg: &DaemonConfig,
    agent: &std::path::Path,
) -> Result<ember_runtimes::sandbox_files::SandboxFiles, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let run = cfg.run_dir();
    let rd = |source| DaemonError::StateDir {
        path: run.clone(),
        source,
    };
    std::fs::create_dir_all(&run).map_err(rd)?;
    for dir in [cfg.bundles_dir(), cfg.builds_dir()] {
        std::fs::create_dir_all(&dir).map_err(rd)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(rd)?;
    }
    std::fs::create_dir_all(cfg.host_dirs()).map_err(rd)?;
    ember_runtimes::sandbox_files::SandboxFiles::prepare(
        &run,
        agent,
        cfg.sandbox_memory_mb * 1024 * 1024,
    )
    .map_err(|e| DaemonError::Config(format!("preparing {}: {e}", run.display())))
}

/// Remove every container, bundle and cgroup a previous daemon on this
/// state dir left behind (after a crash or SIGKILL).
async fn recover(cgroups: &CgroupLayout, prefix: &str, cfg: &DaemonConfig) {
    let mut removed = 0;
    // Thaw first: the previous run may have died with sandboxes frozen, and
    // a runtime asked about a frozen container can block (runsc does).
    let tag = prefix.trim_start_matches("ember-");
    cgroups.thaw_tree(&format!("/ember/{tag}"));
    // A runtime process the previous run started (a sandbox being created
    // when it was killed) outlives it; wait for it to finish, or the
    // container it makes would appear after the sweep below.
    wait_for_runtime_processes(&format!("{prefix}-"), Duration::from_secs(15)).await;
    // Every backend, not only today's: the previous run may have used
    // another. One whose binary is not installed has nothing to remove.
    // Only this daemon's own roots (and, for containers of emberd versions
    // that used them, runc's and crun's default roots, which answer even
    // with frozen containers): another daemon's containers are never
    // listed, so a frozen gVisor sandbox of theirs cannot stall this start.
    let legacy = ["runc", "crun"].map(|name| {
        (
            name,
            ember_runtimes::BackendOptions {
                root: None,
                ..cfg.backend_options(name)
            },
        )
    });
    let own = ember_runtimes::BACKEND_NAMES
        .iter()
        .map(|name| (*name, cfg.backend_options(name)));
    for (name, options) in own.chain(legacy) {
        if options.root.as_ref().is_some_and(|r| !r.exists()) {
            continue;
        }
        let Ok(backend) = ember_runtimes::backend_by_name(name, &options) else {
            continue;
        };
        match backend.list().await {
            Ok(list) => {
                let leftovers: Vec<_> = list
                    .iter()
                    .filter(|c| c.id.starts_with(&format!("{prefix}-")))
                    .collect();
                // runc's and crun's pid is the container's init: killed
                // first, every container is stopped by the time it is
                // deleted, which spares runc's 100 ms wait per container.
                // (runsc's is its sandbox process, left to runsc.)
                if matches!(name, "runc" | "crun") {
                    let pids: Vec<u32> = leftovers
                        .iter()
                        .filter(|c| c.pid > 0)
                        .map(|c| c.pid as u32)
                        .collect();
                    ember_runtimes::sandbox::kill_and_wait(&pids, Duration::from_millis(500)).await;
                }
                for c in leftovers {
                    match backend.delete(&c.id).await {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(sandbox = %c.id, backend = name, "removing leftover sandbox: {e}")
                        }
                    }
                }
            }
            Err(ember_runtimes::RuntimeError::Spawn { .. }) => {}
            Err(e) => tracing::warn!(backend = name, "listing leftover sandboxes: {e}"),
        }
    }
    // Bundles and builds in the run directory, runsc's host directories
    // in the state dir (where older versions also kept bundles).
    for dir in [cfg.bundles_dir(), cfg.builds_dir(), cfg.host_dirs()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                ember_runtimes::sandbox::remove_bundle(&e.path());
            }
        }
    }
    let left = cgroups.remove_tree(&format!("/ember/{tag}"));
    for p in &left {
        tracing::warn!(cgroup = %p.display(), "could not remove leftover cgroup");
    }
    if removed > 0 {
        tracing::info!(removed, "removed sandboxes left by a previous run");
    }
}

/// Wait (up to `limit`) until no runc, crun or runsc process works on a
/// container whose id starts with `prefix`.
async fn wait_for_runtime_processes(prefix: &str, limit: Duration) {
    let busy = || -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                let runtime = args.first().is_some_and(|a| {
                    let name = a.rsplit(|b| *b == b'/').next().unwrap_or(a);
                    matches!(name, b"runc" | b"crun" | b"runsc")
                });
                runtime && args.iter().any(|a| a.starts_with(prefix.as_bytes()))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        let pids = busy();
        if pids.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(?pids, "runtime processes of the previous run still running");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
}

impl Drop for CodeHold<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.pin.take().and_then(Pin::release) {
            self.daemon.drop_code_if_unused(d.as_str());
        }
    }
}

/// Drop stored code that no function refers to.
fn gc_store(registry: &Registry, store: &CodeStore) {
    let Ok(digests) = store.list() else { return };
    for d in digests {
        let in_use = || !matches!(registry.digest_in_use(d.as_str()), Ok(false));
        if let Err(e) = store.remove_unused(&d, in_use) {
            tracing::warn!(digest = d.as_str(), "removing unused code: {e}");
        }
    }
}

/// Run emberd until SIGTERM or SIGINT, then drain: the API keeps
/// answering (new invocations get `503 shutting_down`) while running
/// invocations finish, up to `--drain-timeout-ms`; then every sandbox is
/// removed, the listeners close and the socket is deleted.
pub async fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let socket = cfg.socket.clone();
    let sock_err = |source| DaemonError::Socket {
        path: socket.clone(),
        source,
    };
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(DaemonError::SocketInUse(socket.clone()));
        }
        std::fs::remove_file(&socket).map_err(sock_err)?;
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // Bound before any sandbox exists, so a taken port fails fast.
    let http = match cfg.http {
        Some(addr) => Some(crate::dashboard::bind(addr).await?),
        None => None,
    };
    let grace = Duration::from_millis(cfg.drain_timeout_ms);
    let token_path = crate::dashboard::token_path(&cfg.state_dir);
    let daemon = Daemon::start(cfg).await?;
    let http = match http {
        Some(l) => {
            let token = crate::dashboard::publish_token(&token_path)?;
            if let Ok(addr) = l.local_addr() {
                // Never the token itself: logs are read by more people
                // than root.
                tracing::info!(
                    token_file = %token_path.display(),
                    "dashboard on http://{addr}/ (open http://{addr}/#token=<the token in token_file>)"
                );
            }
            Some((l, token))
        }
        None => None,
    };
    let listener = tokio::net::UnixListener::bind(&socket).map_err(sock_err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
            .map_err(sock_err)?;
    }
    tracing::info!(socket = %socket.display(), "serving");
    crate::progress::spawn_warm_up(daemon.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut api = tokio::spawn(crate::api::serve(
        daemon.clone(),
        listener,
        stopped(stop_rx.clone()),
    ));
    let dashboard = http.map(|(l, token)| {
        tokio::spawn(crate::dashboard::serve(
            daemon.clone(),
            l,
            token,
            stopped(stop_rx.clone()),
        ))
    });
    // Registered once: the first signal starts the drain, a second one
    // (none is missed in between) cuts it short.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let failed = tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: draining");
            None
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: draining");
            None
        }
        r = &mut api => Some(r),
    };
    let hurry = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    daemon.shutdown(grace, hurry).await;
    let _ = stop_tx.send(true);
    let served = match failed {
        Some(r) => r,
        None => api.await,
    };
    if let Some(d) = dashboard {
        if let Ok(Err(e)) = d.await {
            tracing::warn!("dashboard listener: {e}");
        }
    }
    let _ = std::fs::remove_file(&socket);
    match served {
        Ok(r) => r.map_err(sock_err),
        Err(e) => Err(sock_err(std::io::Error::other(e))),
    }
}
