//! A live sandbox: its container, agent connection, mount namespace and
//! freezer, and how to create and destroy one.

use crate::agent_conn::AgentConn;
use crate::bundle::{write_bundle, BundleSpec};
use crate::cgroup::{CgroupLayout, Freezer};
use crate::error::RuntimeError;
use crate::limits::{CgroupLimits, InvocationLimits};
use crate::runc::Runc;
use ember_injector::Injector;
use ember_profiles::{Limits, Profile};
use ember_proto::{FromAgent, Ready, ToAgent};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What every sandbox of a pool is made from.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub runc: Runc,
    /// Static `ember-agent` binary on the host.
    pub agent: PathBuf,
    /// Interpreter path inside the sandbox.
    pub python: String,
    /// Directory holding one bundle directory per sandbox.
    pub bundles_dir: PathBuf,
    /// cgroup parent of all this daemon's sandboxes, e.g. `/ember/<tag>`.
    pub cgroup_parent: String,
    pub profile: Profile,
    pub limits: Limits,
    /// How long a new sandbox may take to report ready.
    pub ready_timeout: Duration,
}

pub struct Sandbox {
    pub id: String,
    pub init_pid: u32,
    /// Mounts code into this sandbox's namespace (its thread holds the
    /// namespace, so injection never targets another process even if the
    /// pid were reused).
    pub injector: Injector,
    pub freezer: Freezer,
    /// Memory, pids and CPU limit files of its cgroup.
    pub limits: CgroupLimits,
    /// The limits last written (`None`: the bundle's own so far).
    pub applied: Option<InvocationLimits>,
    /// Memory the idle sandbox uses (agent, zygote, spare), measured when
    /// it became ready; a function's memory limit comes on top of it.
    pub baseline_memory: u64,
    pub conn: AgentConn,
    pub ready: Ready,
    pub bundle: PathBuf,
    pub created: Instant,
    /// How long creation took (runtime start + zygote preload).
    pub create_us: u64,
    pub invocations: u64,
    /// When it last went back to its pool (creation time until then).
    pub last_used: Instant,
}

impl Sandbox {
    /// Create, start and wait for the agent's ready message. On any error
    /// the half-made container and bundle are removed.
    pub async fn create(
        cfg: &SandboxConfig,
        cgroups: &CgroupLayout,
        id: &str,
    ) -> Result<Sandbox, RuntimeError> {
        let started = Instant::now();
        let bundle = cfg.bundles_dir.join(id);
        let cgroups_path = format!("{}/{}", cfg.cgroup_parent, id);
        let result = async {
            write_bundle(&BundleSpec {
                dir: &bundle,
                agent: &cfg.agent,
                python: &cfg.python,
                cgroups_path: &cgroups_path,
                profile: &cfg.profile,
                limits: cfg.limits,
            })?;
            let freezer = cgroups.freezer(&cgroups_path)?;
            let limits = cgroups.limits(&cgroups_path);
            let (init_pid, mut conn) = cfg.runc.run_detached(id, &bundle).await?;
            let mntns = std::fs::File::open(format!("/proc/{init_pid}/ns/mnt"))
                .map(OwnedFd::from)
                .map_err(|source| RuntimeError::Namespace {
                    pid: init_pid,
                    source,
                })?;
            let injector = Injector::new(mntns, init_pid).map_err(|e| RuntimeError::Agent {
                id: id.to_string(),
                message: format!("joining its mount namespace: {e}"),
            })?;
            let ready = match tokio::time::timeout(cfg.ready_timeout, conn.recv()).await {
                Err(_) => {
                    return Err(RuntimeError::AgentTimeout {
                        id: id.to_string(),
                        waited_ms: cfg.ready_timeout.as_millis() as u64,
                    })
                }
                Ok(Err(message)) => {
                    return Err(RuntimeError::Agent {
                        id: id.to_string(),
                        message,
                    })
                }
                Ok(Ok(FromAgent::Ready(r))) if r.protocol == ember_proto::PROTOCOL_VERSION => r,
                Ok(Ok(FromAgent::Ready(r))) => {
                    return Err(RuntimeError::Agent {
                        id: id.to_string(),
                        message: format!(
                            "{} speaks protocol {}, this emberd speaks {}: rebuild and reinstall the agent (scripts/build-agent, scripts/setup)",
                            cfg.agent.display(),
                            r.protocol,
                            ember_proto::PROTOCOL_VERSION
                        ),
                    })
                }
                Ok(Ok(other)) => {
                    return Err(RuntimeError::Agent {
                        id: id.to_string(),
                        message: format!(
                            "expected ready, got {other:?}; stderr: {}",
                            conn.stderr_tail()
                        ),
                    })
                }
            };
            let baseline_memory = limits.memory_usage().unwrap_or(0);
            Ok(Sandbox {
                id: id.to_string(),
                init_pid,
                injector,
                freezer,
                limits,
                applied: None,
                baseline_memory,
                conn,
                ready,
                bundle: bundle.clone(),
                created: Instant::now(),
                create_us: started.elapsed().as_micros() as u64,
                invocations: 0,
                last_used: Instant::now(),
            })
        }
        .await;
        if result.is_err() {
            let _ = cfg.runc.delete_force(id).await;
            let _ = std::fs::remove_dir_all(&bundle);
        }
        result
    }

    /// Kill and remove the container, its cgroups and its bundle.
    pub async fn destroy(mut self, runc: &Runc) -> Result<(), RuntimeError> {
        // A polite stop first lets the agent kill its children; a frozen or
        // hung agent is handled by the forced delete anyway.
        let _ = self.freezer.thaw();
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            self.conn.send(&ToAgent::Shutdown),
        )
        .await;
        let res = runc.delete_force(&self.id).await;
        let _ = std::fs::remove_dir_all(&self.bundle);
        res
    }
}
