//! Starting the daemon: lock the state dir, open the registry, records and
//! store, clean up after a previous run, prepare the run directory, and
//! start a pool per language runtime and backend.

use crate::daemon::{Daemon, DaemonError, MAX_BUILDS};
use crate::history::History;
use crate::pool::{Pool, PoolSettings};
use crate::registry::Registry;
use crate::settings::Settings;
use ember_api::{Backend, Language};
use ember_injector::CodeStore;
use ember_profiles::{Limits, Profile};
use ember_runtimes::cgroup::CgroupLayout;
use ember_runtimes::language::build::BuildConfig;
use ember_runtimes::sandbox_files::SandboxFiles;
use ember_runtimes::{Injection, Interpreter, SandboxConfig};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

type Backends = Vec<(Backend, Arc<dyn ember_runtimes::Backend>)>;

/// The pools of a daemon, and what deploys need to know of them.
struct Pools {
    pools: BTreeMap<(Language, Backend), Arc<Pool>>,
    runtime_backends: BTreeMap<Language, Backend>,
    unavailable: BTreeMap<Language, String>,
}

impl Daemon {
    /// Open the state dir, clean up after any previous run, and start the
    /// pools (their refill runs in the background).
    pub async fn start(settings: Settings) -> Result<Arc<Daemon>, DaemonError> {
        let lock = lock_state_dir(&settings)?;
        let (names, backends) = backends(&settings)?;
        let cgroups = CgroupLayout::detect();
        let registry = Registry::open(&settings.db_path())?;
        let retention = crate::history::Retention {
            rows: settings.invocation_retention,
            bytes: settings.history_max_bytes,
        };
        let (history, interrupted) = History::open(&settings.db_path(), retention)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "invocations of the previous run were cut off; recorded as interrupted"
            );
        }
        let store = Arc::new(CodeStore::open(&settings.code_dir())?);
        crate::recover::recover(&cgroups, &settings).await;
        crate::daemon::gc_store(&registry, &store);
        settings
            .userns
            .check_host()
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        // Removed again if the start fails from here on.
        let mut made = StartGuard {
            run_dir: settings.run_dir.clone(),
            cgroup: settings.cgroup(),
            cgroups: cgroups.clone(),
            armed: true,
        };
        let files = prepare_run_dir(&settings)?;
        cgroups
            .set_budget(&settings.cgroup(), settings.budget)
            .map_err(|e| DaemonError::Config(format!("the sandboxes' cgroup budget: {e}")))?;
        let pools = start_pools(&settings, &backends, &files, &cgroups)?;
        let builds = build_configs(&settings, &backends, &files)?;
        tracing::info!(
            state_dir = %settings.state_dir.display(),
            tag = %settings.tag,
            agent = %settings.agent.display(),
            functions = registry.list().map(|l| l.len()).unwrap_or(0),
            "emberd started"
        );
        made.armed = false;
        let records = crate::adopted::AdoptedRecords::new(&settings.state_dir);
        for pool in pools.pools.values() {
            pool.keep_records(records.clone());
        }
        let settings_sessions = settings.sessions;
        // Sessions a previous emberd left open died with it: say so.
        match registry.end_sessions_left_open(crate::registry::now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                sessions = n,
                "sessions of the previous run ended with it; recorded as daemon_restart"
            ),
            Err(e) => tracing::warn!("recording the previous run's sessions as ended: {e}"),
        }
        let daemon = Arc::new(Daemon {
            builds,
            build_slots: tokio::sync::Semaphore::new(MAX_BUILDS),
            settings,
            backends: names,
            runtime_backends: pools.runtime_backends,
            unavailable: pools.unavailable,
            registry,
            history,
            metrics: crate::metrics::Metrics::default(),
            store,
            pools: pools.pools,
            zygotes: Default::default(),
            gates: Default::default(),
            sessions: crate::sessions::Sessions::new(settings_sessions),
            cgroups,
            _lock: lock,
        });
        tokio::spawn(crate::invoke::session::sweep(Arc::downgrade(&daemon)));
        // In the background: an agent that does not answer must not hold
        // up the start.
        let readopting = daemon.clone();
        tokio::spawn(async move {
            let back = readopting.readopt().await;
            if back > 0 {
                tracing::info!(sandboxes = back, "took back adopted sandboxes");
            }
        });
        Ok(daemon)
    }
}

/// Create the state dir (private to root) and take its lock: one daemon
/// per state dir.
fn lock_state_dir(settings: &Settings) -> Result<Flock<std::fs::File>, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let sd = |source| DaemonError::StateDir {
        path: settings.state_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&settings.state_dir).map_err(sd)?;
    // Functions' code and the registry are nobody else's business on
    // the host; sandboxes see code only through their own mounts.
    std::fs::set_permissions(&settings.state_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(sd)?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(settings.lock_path())
        .map_err(sd)?;
    Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| DaemonError::Locked(settings.state_dir.clone()))
}

/// The flags' backends, then any the config file names for a runtime.
fn backends(settings: &Settings) -> Result<(Vec<Backend>, Backends), DaemonError> {
    let mut names: Vec<Backend> = Vec::new();
    for b in &settings.backends {
        if names.contains(b) {
            return Err(DaemonError::Config(format!("backend {b} given twice")));
        }
        names.push(*b);
    }
    for section in settings.file.pools.values() {
        if let Some(b) = section.backend.as_deref().and_then(Backend::by_name) {
            if !names.contains(&b) {
                names.push(b);
            }
        }
    }
    let mut backends = Vec::new();
    for b in &names {
        let backend = ember_runtimes::backend_by_name(b.as_str(), &settings.backend_options(*b))
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        backends.push((*b, backend));
    }
    Ok((names, backends))
}

/// One pool per enabled runtime (whose interpreter is installed) and
/// backend, each refilling in the background.
fn start_pools(
    settings: &Settings,
    backends: &Backends,
    files: &SandboxFiles,
    cgroups: &CgroupLayout,
) -> Result<Pools, DaemonError> {
    // A fresh boot id keeps new sandbox ids distinct from any leftover.
    let boot = format!(
        "{:04x}",
        (crate::registry::now_ms() as u64 ^ u64::from(std::process::id())) & 0xffff
    );
    let mut out = Pools {
        pools: BTreeMap::new(),
        runtime_backends: BTreeMap::new(),
        unavailable: BTreeMap::new(),
    };
    for language in Language::ALL {
        let path = match interpreter(settings, language) {
            Ok(path) => path,
            Err(why) => {
                out.unavailable.insert(language, why.to_string());
                continue;
            }
        };
        let rt = language.runtime_name();
        let section = settings.file.pools.get(rt).cloned().unwrap_or_default();
        let default_backend = section
            .backend
            .as_deref()
            .and_then(Backend::by_name)
            .unwrap_or_else(|| settings.default_backend());
        out.runtime_backends.insert(language, default_backend);
        let pool_settings =
            PoolSettings::from_section(&settings.pools, &section, &settings.file.specialized);
        for (name, backend) in backends {
            let interpreter = Interpreter {
                language,
                path: path.clone(),
            };
            let sandbox_cfg = sandbox_config(settings, backend, files, interpreter)?;
            let short = rt.trim_end_matches(char::is_numeric);
            let pool = Pool::new(
                language,
                *name,
                sandbox_cfg,
                cgroups.clone(),
                format!("ember-{}-{boot}-{short}-{name}", settings.tag),
                pool_settings,
            );
            tokio::spawn(pool.clone().refill_loop());
            out.pools.insert((language, *name), pool);
        }
    }
    Ok(out)
}

/// Why a language runtime has no pool (deploys of it say so).
#[derive(Debug, thiserror::Error)]
enum NoPool {
    #[error("not enabled in this emberd (start it with --runtimes)")]
    NotEnabled,
    #[error("its interpreter {0} is not installed")]
    NoInterpreter(String),
}

/// The interpreter of `language`, or why it has no pool.
fn interpreter(settings: &Settings, language: Language) -> Result<String, NoPool> {
    if !settings.runtimes.contains(&language) {
        return Err(NoPool::NotEnabled);
    }
    let path = match language {
        Language::Python => settings.python.clone(),
        Language::Node => settings.node.clone(),
    };
    // The sandboxes bind the host's /usr: no interpreter on the host, no
    // pool (deploys of that runtime say why).
    if !Path::new(&path).exists() {
        tracing::warn!(runtime = %language, interpreter = %path, "interpreter not installed; no pool for this runtime");
        return Err(NoPool::NoInterpreter(path));
    }
    Ok(path)
}

/// How the sandboxes of one pool are made.
fn sandbox_config(
    settings: &Settings,
    backend: &Arc<dyn ember_runtimes::Backend>,
    files: &SandboxFiles,
    interpreter: Interpreter,
) -> Result<SandboxConfig, DaemonError> {
    Ok(SandboxConfig {
        backend: backend.clone(),
        tmpfs_bytes: settings.tmpfs_mb * 1024 * 1024,
        files: files.clone(),
        interpreter,
        bundles_dir: settings.bundles_dir(),
        host_dirs: settings.host_dirs(),
        // gVisor runs its Sentry as the host's nobody in a user namespace
        // of its own whatever the bundle says; a mapping would only move
        // its file proxy off root, and with it access to the store
        // (docs/isolation.md).
        userns: user_namespace(settings, backend),
        cgroup_parent: settings.cgroup(),
        profile: profile(settings)?,
        limits: Limits {
            memory_bytes: settings.sandbox_memory_mb * 1024 * 1024,
            pids: settings.sandbox_pids,
        },
        ready_timeout: Duration::from_secs(30),
    })
}

/// The id range and lock directory of user namespaces, on backends whose
/// sandboxes share the host kernel.
fn user_namespace(
    settings: &Settings,
    backend: &Arc<dyn ember_runtimes::Backend>,
) -> Option<(ember_runtimes::userns::IdRange, PathBuf)> {
    (backend.injection() == Injection::MountNamespace).then(|| {
        (
            settings.userns,
            PathBuf::from(ember_runtimes::userns::LOCK_DIR),
        )
    })
}

fn profile(settings: &Settings) -> Result<Profile, DaemonError> {
    Profile::by_name(&settings.sandbox_profile).map_err(|e| DaemonError::Config(e.to_string()))
}

/// How deploy builds run, per backend.
fn build_configs(
    settings: &Settings,
    backends: &Backends,
    files: &SandboxFiles,
) -> Result<BTreeMap<Backend, BuildConfig>, DaemonError> {
    let mut builds = BTreeMap::new();
    for (name, backend) in backends {
        let build = BuildConfig {
            backend: backend.clone(),
            files: files.clone(),
            builds_dir: settings.builds_dir(),
            cgroup_parent: settings.cgroup(),
            userns: user_namespace(settings, backend),
            profile: profile(settings)?,
            limits: crate::deploy::build_limits(settings),
            wheels: crate::deploy::wheels(settings),
        };
        builds.insert(*name, build);
    }
    Ok(builds)
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
fn prepare_run_dir(settings: &Settings) -> Result<SandboxFiles, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let run = &settings.run_dir;
    let rd = |source| DaemonError::StateDir {
        path: run.clone(),
        source,
    };
    std::fs::create_dir_all(run).map_err(rd)?;
    for dir in [settings.bundles_dir(), settings.builds_dir()] {
        std::fs::create_dir_all(&dir).map_err(rd)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(rd)?;
    }
    std::fs::create_dir_all(settings.host_dirs()).map_err(rd)?;
    SandboxFiles::prepare(
        run,
        &settings.agent,
        settings.sandbox_memory_mb * 1024 * 1024,
    )
    .map_err(|e| DaemonError::Config(format!("preparing {}: {e}", run.display())))
}
