//! A Kubernetes node without the kubelet: a private containerd (see
//! [`crate::containerd`]) with its CRI plugin on, a CNI bridge of its own,
//! ember's runtime handlers, and a CRI v1 client making the kubelet's
//! calls (blocking, over containerd's Unix socket). No registry, no
//! network off the machine: the pause and app images are built here from
//! the host's static busybox.

use crate::containerd::{Containerd, Launch, CRI_PLUGIN, IMAGE};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

pub use cri::{
    ContainerConfig, ContainerState, ContainerStatus, ExecSyncResponse, Mount, PodSandboxConfig,
};

type RuntimeClient = cri::runtime_service_client::RuntimeServiceClient<Channel>;

/// Host tools a CRI test needs beyond containerd's, with their Debian
/// packages.
pub const TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("/usr/sbin/ip", "iproute2"),
];

/// Where Debian's containernetworking-plugins are.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The pod sandbox (pause) image, built here: busybox's shell waiting
/// for SIGTERM.
pub const PAUSE_IMAGE: &str = "docker.io/library/ember-pause:1";

/// The app image (busybox), the containerd tests' own.
pub const APP_IMAGE: &str = IMAGE;

/// The CRI plugin's containerd namespace.
pub const NAMESPACE: &str = "k8s.io";

/// Runtime handlers (RuntimeClass handlers) configured:
/// plain runc through containerd's runc v2 shim;
pub const RUNC: &str = "runc";
/// the runc v2 shim with `ember-runtime` as its runtime binary;
pub const EMBER: &str = "ember";
/// ember's own shim (`containerd-shim-ember-v1`) over runc;
pub const EMBER_SHIM: &str = "ember-shim";
/// ember's own shim over runsc (gVisor).
pub const EMBER_GVISOR: &str = "ember-gvisor";

/// The Kubernetes namespace of the tests' pods.
const POD_NAMESPACE: &str = "ember-it";

/// The kubelet's default masked and read-only paths (it sends them for
/// every container that is not privileged).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What a pod spec may ask beyond the kubelet's defaults, as emberd's
/// DaemonSet does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Privileges {
    /// `privileged: true` containers: all capabilities and devices, no
    /// masked or read-only paths; their sandbox is privileged too (the
    /// kubelet marks it so, and containerd refuses a privileged container
    /// in a sandbox that is not).
    pub privileged: bool,
    /// `hostPID: true`: the sandbox and its containers in the node's PID
    /// namespace (containerd's).
    pub host_pid: bool,
}

/// The pod's private network: a bridge no other test uses and a /24 on
/// it, nothing routed anywhere.
struct Net {
    name: String,
    bridge: String,
    /// `10.213.X`
    prefix: String,
}

/// A private containerd with CRI on, and a CRI client for it. Stops every
/// pod, the daemon, and removes its bridge, cgroups, mounts and files on
/// drop, even when the test panicked.
pub struct Cri {
    ctrd: Containerd,
    rt: tokio::runtime::Runtime,
    client: RuntimeClient,
    /// Unique per instance (from the temp dir's name).
    pub tag: String,
    net: Net,
    /// The pods' cgroup parent, `/ember-cri-<tag>`.
    cgroup_parent: String,
    /// Every pod and container id this instance made.
    ids: Mutex<Vec<String>>,
    counter: AtomicU32,
}

impl Cri {
    pub fn start() -> Cri {
        Cri::start_with_env(&[])
    }

    /// Start with extra environment for containerd, which passes it to
    /// its shims and they to the runtime (`EMBER_AGENT`, `EMBER_SOCKET`).
    pub fn start_with_env(env: &[(&str, &Path)]) -> Cri {
        let bin_dir = std::fs::canonicalize(crate::bin_dir()).expect("target dir");
        let runtime = bin_dir.join("ember-runtime");
        // containerd finds `containerd-shim-ember-v1` on its PATH.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut env: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(k, v)| (OsString::from(k), v.as_os_str().to_owned()))
            .collect();
        env.push((
            "PATH".into(),
            std::env::join_paths(
                std::iter::once(bin_dir.clone()).chain(std::env::split_paths(&path)),
            )
            .expect("PATH"),
        ));
        let net = std::cell::RefCell::new(None);
        let plugins = |d: &Path| {
            let tag = tag_of(d);
            let n = Net {
                name: format!("ember-it-{tag}"),
                bridge: format!("embr-{tag}"),
                prefix: format!("10.213.{}", free_subnet(&tag)),
            };
            let text = config(d, &n, &runtime);
            *net.borrow_mut() = Some(n);
            text
        };
        let ctrd = Containerd::launch(&Launch {
            prefix: "ember-it-cri-",
            cri: true,
            plugins: &plugins,
            env: &env,
        });
        let net = net.into_inner().expect("network configured");
        let tag = tag_of(ctrd.dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = ctrd.socket.clone();
        let channel = rt
            .block_on(
                Endpoint::from_static("http://[::]:50051")
                    .timeout(Duration::from_secs(120))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    })),
            )
            .unwrap_or_else(|e| panic!("CRI connection: {e}; log:\n{}", ctrd.log()));
        let c = Cri {
            client: RuntimeClient::new(channel),
            rt,
            cgroup_parent: format!("/ember-cri-{tag}"),
            tag,
            net,
            ids: Mutex::new(Vec::new()),
            counter: AtomicU32::new(0),
            ctrd,
        };
        // CRI answers once its plugin is up (and its CNI conf loaded).
        let t = Instant::now();
        loop {
            match c.try_version() {
                Ok(_) => break,
                Err(e) => assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "CRI did not come up: {e}; log:\n{}",
                    c.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.ctrd.import_image(NAMESPACE, APP_IMAGE, &["/bin/sh"]);
        c.ctrd.import_image(
            NAMESPACE,
            PAUSE_IMAGE,
            &[
                "/bin/sh",
                "-c",
                "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
            ],
        );
        c
    }

    /// The private containerd (for `ctr`, its temp dir and log).
    pub fn containerd(&self) -> &Containerd {
        &self.ctrd
    }

    pub fn dir(&self) -> &Path {
        self.ctrd.dir.path()
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        self.ctrd.log()
    }

    /// The last lines of containerd's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Run one call of the client to its end.
    fn call<T, F>(&self, f: impl FnOnce(RuntimeClient) -> F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt
            .block_on(f(self.client.clone()))
            .map(tonic::Response::into_inner)
    }

    fn must<T>(&self, what: &str, r: Result<T, tonic::Status>) -> T {
        // The drop prints containerd's log.
        r.unwrap_or_else(|e| panic!("CRI {what}: {} ({:?})", e.message(), e.code()))
    }

    pub fn try_version(&self) -> Result<cri::VersionResponse, tonic::Status> {
        self.call(|mut c| async move {
            c.version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
        })
    }

    pub fn version(&self) -> cri::VersionResponse {
        let r = self.try_version();
        self.must("Version", r)
    }

    /// A pod sandbox config as the kubelet makes one for a pod `name`
    /// (made unique to this instance) with `annotations`: its metadata
    /// and labels, a log directory, the node's cgroup parent, pod network
    /// and IPC, a PID namespace per container, seccomp unconfined.
    pub fn pod_config(&self, name: &str, annotations: &[(&str, &str)]) -> PodSandboxConfig {
        self.pod_config_with(name, annotations, Privileges::default())
    }

    /// [`pod_config`](Self::pod_config) for a pod spec asking for `p`.
    pub fn pod_config_with(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
        p: Privileges,
    ) -> PodSandboxConfig {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{name}-{}", self.tag);
        let uid = format!("{}-{n:04}-ember-it", self.tag);
        let log_directory = self
            .dir()
            .join("pods")
            .join(format!("{POD_NAMESPACE}_{name}_{uid}"));
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.clone()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                POD_NAMESPACE.to_string(),
            ),
            ("io.kubernetes.pod.uid".to_string(), uid.clone()),
        ]);
        PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid,
                namespace: POD_NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: name,
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels,
            annotations: pairs(annotations),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(p)),
                    seccomp: Some(unconfined()),
                    privileged: p.privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox through `handler`: the sandbox id, or containerd's
    /// error.
    pub fn try_run_pod(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        // The kubelet makes the pod's log directory.
        std::fs::create_dir_all(&config.log_directory).expect("pod log directory");
        let (config, handler) = (config.clone(), handler.to_string());
        let id = self
            .call(|mut c| async move {
                c.run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: handler,
                })
                .await
            })?
            .pod_sandbox_id;
        self.ids.lock().unwrap().push(id.clone());
        Ok(id)
    }

    pub fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> String {
        let r = self.try_run_pod(config, handler);
        self.must(&format!("RunPodSandbox ({handler})"), r)
    }

    pub fn pod_status(&self, pod: &str) -> cri::PodSandboxStatus {
        let pod = pod.to_string();
        let r = self.call(|mut c| async move {
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose: false,
            })
            .await
        });
        self.must("PodSandboxStatus", r).status.expect("a status")
    }

    /// A container config as the kubelet makes one: image by name,
    /// `command`, `annotations`, its log at `<name>/0.log` in the pod's
    /// log directory, BestEffort resources, the pod's namespaces, seccomp
    /// unconfined, the default masked and read-only paths.
    pub fn container_config(
        &self,
        name: &str,
        command: &[&str],
        annotations: &[(&str, &str)],
    ) -> ContainerConfig {
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        ContainerConfig {
            annotations: pairs(annotations),
            ..self.image_container_config(
                name,
                APP_IMAGE,
                &command,
                &[],
                &[],
                Privileges::default(),
            )
        }
    }

    /// A container config as the kubelet makes one for a container spec
    /// with `image` (already on the node), `command`, `args`, volume
    /// `mounts` (see [`host_path`]) and `p` asked of its pod: the rest as
    /// [`container_config`](Self::container_config), but a privileged
    /// container gets no masked or read-only paths.
    pub fn image_container_config(
        &self,
        name: &str,
        image: &str,
        command: &[String],
        args: &[String],
        mounts: &[Mount],
        p: Privileges,
    ) -> ContainerConfig {
        let paths = |all: &[&str]| -> Vec<String> {
            if p.privileged {
                Vec::new()
            } else {
                all.iter().map(|s| s.to_string()).collect()
            }
        };
        ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.to_vec(),
            args: args.to_vec(),
            mounts: mounts.to_vec(),
            labels: HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
            log_path: format!("{name}/0.log"),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces(p)),
                    seccomp: Some(unconfined()),
                    privileged: p.privileged,
                    masked_paths: paths(MASKED_PATHS),
                    readonly_paths: paths(READONLY_PATHS),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    pub fn try_create_container(
        &self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        let id = self
            .call(|mut c| async move { c.create_container(req).await })?
            .container_id;
        self.ids.lock().unwrap().push(id.clone());
        Ok(id)
    }

    pub fn create_container(
        &self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> String {
        let r = self.try_create_container(pod, config, pod_config);
        self.must("CreateContainer", r)
    }

    pub fn try_start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| async move {
            c.start_container(cri::StartContainerRequest { container_id: id })
                .await
        })
        .map(|_| ())
    }

    pub fn start_container(&self, id: &str) {
        let r = self.try_start_container(id);
        self.must("StartContainer", r)
    }

    /// CreateContainer and StartContainer: the container's id.
    pub fn run_container(
        &self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> String {
        let id = self.create_container(pod, config, pod_config);
        self.start_container(&id);
        id
    }

    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let id = id.to_string();
        let r = self.call(|mut c| async move {
            c.container_status(cri::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
        });
        self.must("ContainerStatus", r).status.expect("a status")
    }

    /// Poll ContainerStatus until the container has exited.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerStatus {
        let t = Instant::now();
        loop {
            let s = self.container_status(id);
            if s.state == cri::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(
                t.elapsed() < timeout,
                "container {id} still {:?} after {timeout:?}",
                s.state
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The path of a container's log (the pod's log directory joined
    /// with the container's `log_path`).
    pub fn log_path(&self, pod_config: &PodSandboxConfig, config: &ContainerConfig) -> PathBuf {
        Path::new(&pod_config.log_directory).join(&config.log_path)
    }

    pub fn try_exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.as_secs() as i64,
        };
        self.call(|mut c| async move { c.exec_sync(req).await })
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        let r = self.try_exec_sync(id, cmd, Duration::from_secs(30));
        self.must("ExecSync", r)
    }

    /// StopContainer with a grace period of `timeout` seconds (0: SIGKILL).
    pub fn try_stop_container(&self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| async move {
            c.stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout,
            })
            .await
        })
        .map(|_| ())
    }

    pub fn stop_container(&self, id: &str, timeout: i64) {
        let r = self.try_stop_container(id, timeout);
        self.must("StopContainer", r)
    }

    pub fn try_remove_container(&self, id: &str) -> Result<(), tonic::Status> {
        let id = id.to_string();
        self.call(|mut c| async move {
            c.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await
        })
        .map(|_| ())
    }

    pub fn remove_container(&self, id: &str) {
        let r = self.try_remove_container(id);
        self.must("RemoveContainer", r)
    }

    pub fn try_stop_pod(&self, pod: &str) -> Result<(), tonic::Status> {
        let pod = pod.to_string();
        self.call(|mut c| async move {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
        })
        .map(|_| ())
    }

    pub fn stop_pod(&self, pod: &str) {
        let r = self.try_stop_pod(pod);
        self.must("StopPodSandbox", r)
    }

    pub fn try_remove_pod(&self, pod: &str) -> Result<(), tonic::Status> {
        let pod = pod.to_string();
        self.call(|mut c| async move {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
        })
        .map(|_| ())
    }

    pub fn remove_pod(&self, pod: &str) {
        let r = self.try_remove_pod(pod);
        self.must("RemovePodSandbox", r)
    }

    /// The kubelet's teardown of a pod: stop and remove each container
    /// (SIGKILL, no grace), then stop and remove the sandbox.
    pub fn delete_pod(&self, pod: &str) {
        for c in self.list_containers() {
            if c.pod_sandbox_id == pod {
                self.stop_container(&c.id, 0);
                self.remove_container(&c.id);
            }
        }
        self.stop_pod(pod);
        self.remove_pod(pod);
    }

    pub fn try_list_containers(&self) -> Result<Vec<cri::Container>, tonic::Status> {
        self.call(|mut c| async move {
            c.list_containers(cri::ListContainersRequest { filter: None })
                .await
        })
        .map(|r| r.containers)
    }

    pub fn list_containers(&self) -> Vec<cri::Container> {
        let r = self.try_list_containers();
        self.must("ListContainers", r)
    }

    pub fn try_list_pods(&self) -> Result<Vec<cri::PodSandbox>, tonic::Status> {
        self.call(|mut c| async move {
            c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                .await
        })
        .map(|r| r.items)
    }

    pub fn list_pods(&self) -> Vec<cri::PodSandbox> {
        let r = self.try_list_pods();
        self.must("ListPodSandbox", r)
    }

    /// The host pid of a pod's or container's task (`ctr tasks list`:
    /// CRI does not tell), if it runs.
    pub fn task_pid(&self, id: &str) -> Option<u32> {
        let out = self.ctrd.ctr_in(NAMESPACE, &["tasks", "list"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok())?
        })
    }

    /// The runtime `--root` of a handler's containers (the runc v2 shim
    /// and ember's add the namespace to the configured root).
    pub fn runtime_root(&self, handler: &str) -> PathBuf {
        self.dir().join(handler).join(NAMESPACE)
    }

    /// The pods' address range, `10.213.X.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.net.prefix)
    }

    /// Give the host an address on the pods' bridge (which exists once a
    /// pod runs), so it reaches the pods: this machine only, nothing is
    /// routed further.
    pub fn host_on_bridge(&self) -> String {
        let addr = format!("{}.1", self.net.prefix);
        let out = Command::new("ip")
            .args([
                "addr",
                "replace",
                &format!("{addr}/24"),
                "dev",
                &self.net.bridge,
            ])
            .output()
            .expect("ip addr");
        assert!(
            out.status.success(),
            "ip addr replace on {}: {}",
            self.net.bridge,
            String::from_utf8_lossy(&out.stderr)
        );
        addr
    }

    /// Ids this instance made that a runtime lists (`<id> in <runtime>
    /// --root <dir>`): in each handler's root, and in the default roots of
    /// runc, runsc and ember's shim, in case one ignored its configuration.
    pub fn runtime_listed(&self) -> Vec<String> {
        let ids = self.ids.lock().unwrap().clone();
        let default = |base: &str| Path::new(base).join(NAMESPACE);
        let roots = [
            ("runc", self.runtime_root(RUNC)),
            ("runc", self.runtime_root(EMBER)),
            ("runc", self.runtime_root(EMBER_SHIM)),
            ("runsc", self.runtime_root(EMBER_GVISOR)),
            ("runc", default("/run/containerd/runc")),
            ("runc", default("/run/containerd/ember/runc")),
            ("runsc", default("/run/containerd/ember/runsc")),
            ("runc", PathBuf::from("/run/runc")),
            ("runsc", PathBuf::from("/var/run/runsc")),
        ];
        let mut left = Vec::new();
        for (runtime, root) in roots {
            if !root.exists() {
                continue;
            }
            let Ok(out) = Command::new(runtime)
                .arg("--root")
                .arg(&root)
                .args(["list", "--quiet"])
                .output()
            else {
                continue;
            };
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if ids.iter().any(|id| id == l.trim()) {
                    left.push(format!(
                        "{} in {runtime} --root {}",
                        l.trim(),
                        root.display()
                    ));
                }
            }
        }
        left
    }

    /// Assert that nothing of the pods is left while containerd still
    /// runs: no pod or container in CRI, no task or container in its
    /// namespace, none in the runtimes' state, no mount under the temp
    /// dir, no container cgroup under the pods' parent.
    pub fn assert_clean(&self) {
        let pods = self.list_pods();
        assert!(pods.is_empty(), "pods left: {pods:?}");
        let containers = self.list_containers();
        assert!(containers.is_empty(), "containers left: {containers:?}");
        for what in ["tasks", "containers"] {
            let out = self.ctrd.ctr_in(NAMESPACE, &[what, "list", "--quiet"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.trim().is_empty(), "containerd {what} left: {text}");
        }
        let left = self.runtime_listed();
        assert!(left.is_empty(), "runtime state left: {left:?}");
        let mounts = crate::mounts_under(self.dir());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let cgroups: Vec<PathBuf> = cgroup_dirs(&self.cgroup_parent)
            .into_iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd log (tail):\n{}", self.log_tail());
        }
        // The kubelet's way first, so CNI releases the pods' addresses
        // and network namespaces; then whatever is left is killed.
        for ct in self.try_list_containers().unwrap_or_default() {
            let _ = self.try_stop_container(&ct.id, 0);
            let _ = self.try_remove_container(&ct.id);
        }
        for p in self.try_list_pods().unwrap_or_default() {
            let _ = self.try_stop_pod(&p.id);
            let _ = self.try_remove_pod(&p.id);
        }
        self.ctrd.shutdown();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.net.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        for d in cgroup_dirs(&self.cgroup_parent) {
            remove_cgroup(&d);
        }
        // go-cni's result cache lives outside the temp dir.
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", self.net.name))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The instance's tag: the random end of its temp dir's name.
fn tag_of(dir: &Path) -> String {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    name.rsplit('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

/// An `X` such that no address or route of this host is in 10.213.X.0/24,
/// starting from one derived from `tag`.
fn free_subnet(tag: &str) -> u8 {
    let used = |x: u8| {
        let pat = format!("10.213.{x}.");
        ["addr", "route"].iter().any(|what| {
            Command::new("ip")
                .args(["-4", what, "show"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&pat))
                .unwrap_or(false)
        })
    };
    let start = tag
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 254;
    (0..254u32)
        .map(|i| ((start + i) % 254 + 1) as u8)
        .find(|x| !used(*x))
        .expect("a free 10.213.X.0/24")
}

/// containerd's CRI config: the CNI conf it loads is written here too.
fn config(d: &Path, net: &Net, ember_runtime: &Path) -> String {
    let cni_dir = d.join("cni");
    std::fs::create_dir_all(&cni_dir).expect("CNI conf dir");
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": net.name,
        "plugins": [{
            "type": "bridge",
            "bridge": net.bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": format!("{}.0/24", net.prefix) }]],
                "routes": [],
                "dataDir": d.join("cni-ipam"),
            },
        }],
    });
    std::fs::write(cni_dir.join("10-ember-it.conflist"), conf.to_string()).expect("CNI conf");
    // ember's shim: its delegate, ember-runtime, and its state root in
    // the temp dir (`<root>/k8s.io`).
    for (handler, runtime, args) in [
        (EMBER_SHIM, "runc", ""),
        (
            EMBER_GVISOR,
            "runsc",
            "runtime_args = [\"--platform=ptrace\", \"--network=none\"]\n",
        ),
    ] {
        std::fs::write(
            d.join(format!("{handler}.toml")),
            format!(
                "runtime = {runtime:?}\n{args}ember_runtime = {ember_runtime:?}\nroot = {:?}\n",
                d.join(handler)
            ),
        )
        .expect("shim options");
    }
    let cri = format!("[plugins.\"{CRI_PLUGIN}\"]");
    let runtimes = format!("[plugins.\"{CRI_PLUGIN}\".containerd.runtimes");
    let annotations =
        "pod_annotations = [\"dev.ember.*\"]\ncontainer_annotations = [\"dev.ember.*\"]\n";
    let shim = |name: &str| {
        format!(
            "{runtimes}.{name}]\nruntime_type = \"io.containerd.ember.v1\"\n{annotations}\
             {runtimes}.{name}.options]\nTypeUrl = \"io.containerd.ember.v1.options\"\nConfigPath = {:?}\n",
            d.join(format!("{name}.toml"))
        )
    };
    format!(
        "{cri}\nsandbox_image = {PAUSE_IMAGE:?}\nrestrict_oom_score_adj = true\n\
         netns_mounts_under_state_dir = true\nstream_server_address = \"127.0.0.1\"\n\
         stream_server_port = \"0\"\n\
         [plugins.\"{CRI_PLUGIN}\".cni]\nbin_dir = {CNI_BIN_DIR:?}\nconf_dir = {cni_dir:?}\nmax_conf_num = 1\n\
         [plugins.\"{CRI_PLUGIN}\".containerd]\nsnapshotter = \"overlayfs\"\ndefault_runtime_name = \"runc\"\n\
         {runtimes}.runc]\nruntime_type = \"io.containerd.runc.v2\"\n\
         {runtimes}.runc.options]\nRoot = {:?}\n\
         {runtimes}.ember]\nruntime_type = \"io.containerd.runc.v2\"\n{annotations}\
         {runtimes}.ember.options]\nBinaryName = {ember_runtime:?}\nRoot = {:?}\n\
         {}{}",
        d.join(RUNC),
        d.join(EMBER),
        shim(EMBER_SHIM),
        shim(EMBER_GVISOR),
    )
}

fn pairs(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A hostPath volume mounted at `at` as the kubelet asks for it: the
/// host path as it is, private propagation (a volume mount's default).
pub fn host_path(at: &str, host: &Path, read_only: bool) -> Mount {
    Mount {
        container_path: at.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly: read_only,
        propagation: cri::MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    }
}

/// The kubelet's default: the pod's network and IPC, a PID namespace per
/// container; the node's PID namespace for a `hostPID` pod.
fn namespaces(p: Privileges) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: if p.host_pid {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Container
        } as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The kubelet's seccomp default (without `SeccompDefault`).
fn unconfined() -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    }
}

/// `parent` in each cgroup hierarchy where it exists.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if matches!(f.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            let p = Path::new(f[4]).join(parent.trim_start_matches('/'));
            if p.is_dir() && !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

/// rmdir a cgroup and its children, innermost first.
pub fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The fields of a `/proc/<pid>/status` text, by name (`Seccomp`,
/// `NoNewPrivs`, `CapEff`).
pub fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}
