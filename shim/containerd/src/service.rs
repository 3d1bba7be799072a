//! The task service containerd calls (`containerd.task.v2.Task` over
//! ttrpc): each RPC finds the container, asks the runtime, and records
//! what changed; exits are watched by a thread of their own.

use crate::config::{config_path_from_options, ShimConfig};
use crate::container::{mount_rootfs, unmount_rootfs, Container, ExecProc, ExitVia};
use crate::error::TaskError;
use crate::events::{Event, Events};
use crate::io::StdioPaths;
use crate::process::{Exit, ProcState};
use crate::runtime::Runtime;
use containerd_shim::api::{self, Status};
use containerd_shim::monitor::{monitor_subscribe, Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// The state behind the task service.
pub struct Inner {
    namespace: String,
    containers: Mutex<HashMap<String, Container>>,
    events: Events,
    exit: Arc<ExitSignal>,
    /// ember-runtime's version, checked once per binary path.
    checked: Mutex<Vec<PathBuf>>,
}

/// The task service; cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    pub fn new(namespace: String, events: Events, exit: Arc<ExitSignal>) -> Service {
        let inner = Arc::new(Inner {
            namespace,
            containers: Mutex::new(HashMap::new()),
            events,
            exit,
            checked: Mutex::new(Vec::new()),
        });
        watch_exits(Arc::clone(&inner));
        Service { inner }
    }
}

impl Inner {
    fn containers(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> Result<T, TaskError>,
    ) -> Result<T, TaskError> {
        let mut all = self.containers();
        let c = all
            .get_mut(id)
            .ok_or_else(|| TaskError::NoContainer(id.to_string()))?;
        f(c)
    }

    /// A container's runtime and init, to use without holding the lock.
    fn runtime_and_init(&self, id: &str) -> Result<(Runtime, Arc<ProcState>), TaskError> {
        self.with(id, |c| Ok((c.runtime.clone(), Arc::clone(&c.init))))
    }

    fn runtime_for(&self, req: &api::CreateTaskRequest) -> Result<Runtime, TaskError> {
        let config_path = match req.options.as_ref() {
            Some(any) => config_path_from_options(&any.type_url, &any.value)?,
            None => None,
        };
        let config = ShimConfig::resolve(config_path.as_deref())?;
        let runtime = Runtime::new(config, &self.namespace);
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if !checked.contains(&runtime.config.ember_runtime) {
            runtime.check_version()?;
            checked.push(runtime.config.ember_runtime.clone());
        }
        Ok(runtime)
    }

    fn create(&self, req: api::CreateTaskRequest) -> Result<u32, TaskError> {
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Unsupported("restoring a checkpoint"));
        }
        if self.containers().contains_key(&req.id) {
            return Err(TaskError::Exists(req.id));
        }
        let runtime = self.runtime_for(&req)?;
        let bundle = PathBuf::from(&req.bundle);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let exit_via = if runtime.config.runtime.reports_sandbox_pid() && joins_pod(&bundle) {
            ExitVia::RuntimeWait
        } else {
            ExitVia::Pid
        };
        // A container joining a gVisor sandbox gets its streams at start
        // (runsc hands the sandbox those of `runsc start`): were they
        // passed here too, the reader would see them close at the end of
        // `runsc create` and stop reading.
        let io = match exit_via {
            ExitVia::Pid => stdio.open(&format!("container {}", req.id))?,
            ExitVia::RuntimeWait => StdioPaths::default().open("")?,
        };
        runtime.config.save(&bundle);
        let mounted_rootfs = mount_rootfs(&req.id, &bundle, &req.rootfs)?;
        let pid = match runtime.create(&req.id, &bundle, io) {
            Ok(pid) => pid,
            Err(e) => {
                if mounted_rootfs {
                    unmount_rootfs(&bundle);
                }
                return Err(e.into());
            }
        };
        let container = Container {
            id: req.id.clone(),
            bundle,
            stdio,
            runtime,
            init: Arc::new(ProcState::created(pid)),
            execs: HashMap::new(),
            mounted_rootfs,
            exit_via,
        };
        self.containers().insert(req.id.clone(), container);
        self.events.send(Event::Create(TaskCreate {
            container_id: req.id,
            bundle: req.bundle,
            rootfs: req.rootfs,
            io: Some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        }));
        Ok(pid)
    }

    fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id);
        }
        let (runtime, init, exit_via, bundle, stdio) = self.with(id, |c| {
            let init = Arc::clone(&c.init);
            Ok((
                c.runtime.clone(),
                init,
                c.exit_via,
                c.bundle.clone(),
                c.stdio.clone(),
            ))
        })?;
        if init.status() != Status::CREATED {
            return Err(TaskError::BadRequest {
                what: "start",
                id: id.to_string(),
                reason: format!("the init is {:?}, not created", init.status()),
            });
        }
        let io = match exit_via {
            ExitVia::RuntimeWait => Some(stdio.open(&format!("container {id}"))?),
            ExitVia::Pid => None,
        };
        runtime.start(id, &bundle, io)?;
        let pid = init.pid();
        init.set_running(pid);
        if exit_via == ExitVia::RuntimeWait {
            self.wait_through_runtime(runtime, id.to_string(), init);
        }
        self.events.send(Event::Start(TaskStart {
            container_id: id.to_string(),
            pid,
            ..Default::default()
        }));
        Ok(pid)
    }

    /// A container that joined a gVisor sandbox: its exit is what `runsc
    /// wait` says (started once it runs; it answers for a container that
    /// has already exited too, while the sandbox lives).
    fn wait_through_runtime(self: &Arc<Self>, runtime: Runtime, id: String, init: Arc<ProcState>) {
        let inner = Arc::clone(self);
        std::thread::spawn(move || {
            let status = match runtime.wait(&id) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("{e}");
                    // The sandbox is gone without a word: report a kill.
                    128 + libc::SIGKILL as u32
                }
            };
            inner.exited(&id, "", &init, status);
        });
    }

    fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        // The lock is held across the spawn: the exit watcher, which needs
        // it too, cannot see the exit before the pid is recorded.
        let mut all = self.containers();
        let c = all
            .get_mut(id)
            .ok_or_else(|| TaskError::NoContainer(id.to_string()))?;
        if c.init.exit().is_some() {
            return Err(TaskError::Finished(format!("container {id}")));
        }
        let e = c.exec(exec_id)?;
        if e.state.status() != Status::CREATED {
            return Err(TaskError::BadRequest {
                what: "start exec",
                id: id.to_string(),
                reason: format!("exec {exec_id} was already started"),
            });
        }
        let io = e.stdio.open(&format!("exec {exec_id} of {id}"))?;
        let pid = c
            .runtime
            .spawn_exec(id, &e.process_file, e.pid_file.as_deref(), io)?;
        e.state.set_running(pid);
        self.events.send(Event::ExecStarted(TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            ..Default::default()
        }));
        Ok(pid)
    }

    /// Records an exit and tells containerd, once.
    fn exited(&self, id: &str, exec_id: &str, state: &ProcState, status: u32) {
        let Some(exit) = state.set_exited(status) else {
            return;
        };
        self.events.send(Event::Exit(TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid: state.pid(),
            exit_status: status,
            exited_at: Some(exit.timestamp()).into(),
            ..Default::default()
        }));
    }

    fn delete(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse, TaskError> {
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id);
        }
        let (runtime, init, bundle, mounted) = self.with(id, |c| {
            Ok((
                c.runtime.clone(),
                Arc::clone(&c.init),
                c.bundle.clone(),
                c.mounted_rootfs,
            ))
        })?;
        if matches!(init.status(), Status::RUNNING | Status::PAUSED) {
            return Err(TaskError::Running {
                what: format!("container {id}"),
            });
        }
        if let Err(e) = runtime.delete(id) {
            // Gone already (its gVisor sandbox ended with the pod): what
            // containerd asks for is done.
            if !e.says_gone() {
                return Err(e.into());
            }
            log::warn!("{e}");
        }
        if mounted {
            unmount_rootfs(&bundle);
        }
        // A container deleted before it ran never exits on its own.
        self.exited(id, "", &init, 128 + libc::SIGKILL as u32);
        self.containers().remove(id);
        let exit = init.wait();
        self.events.send(Event::Delete(TaskDelete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: init.pid(),
            exit_status: exit.status,
            exited_at: Some(exit.timestamp()).into(),
            ..Default::default()
        }));
        Ok(delete_response(init.pid(), exit))
    }

    fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse, TaskError> {
        self.with(id, |c| {
            let e = c.exec(exec_id)?;
            let exit = match (e.state.exit(), e.state.status()) {
                (Some(exit), _) => exit,
                // Added, never started: nothing ran.
                (None, Status::CREATED) => Exit::now(0),
                _ => {
                    return Err(TaskError::Running {
                        what: format!("exec {exec_id} of {id}"),
                    })
                }
            };
            let pid = e.state.pid();
            c.execs.remove(exec_id);
            Ok(delete_response(pid, exit))
        })
    }

    fn kill(&self, req: &api::KillRequest) -> Result<(), TaskError> {
        let (runtime, state, pid_file) = self.with(&req.id, |c| {
            let state = Arc::clone(c.process(&req.exec_id)?);
            let pid_file = match req.exec_id.as_str() {
                "" => None,
                e => c.exec(e)?.pid_file.clone(),
            };
            Ok((c.runtime.clone(), state, pid_file))
        })?;
        if state.exit().is_some() {
            return Err(TaskError::Finished(req.id.clone()));
        }
        if req.exec_id.is_empty() {
            return Ok(runtime.kill(&req.id, req.signal, req.all)?);
        }
        signal_exec(&req.id, &req.exec_id, &state, pid_file, req.signal)
    }

    fn exec(&self, req: api::ExecProcessRequest) -> Result<(), TaskError> {
        let spec = req
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        if spec.is_empty() {
            return Err(TaskError::BadRequest {
                what: "exec",
                id: req.id.clone(),
                reason: "no process spec".into(),
            });
        }
        self.with(&req.id, |c| {
            if c.execs.contains_key(&req.exec_id) {
                return Err(TaskError::ExecExists {
                    id: req.id.clone(),
                    exec: req.exec_id.clone(),
                });
            }
            let (process_file, pid_file) = c.exec_files(&req.exec_id)?;
            std::fs::write(&process_file, &spec).map_err(|source| TaskError::Write {
                id: req.id.clone(),
                path: process_file.clone(),
                source,
            })?;
            let stdio = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            let state = Arc::new(ProcState::created(0));
            let exec = ExecProc {
                stdio,
                process_file,
                pid_file,
                state,
            };
            c.execs.insert(req.exec_id.clone(), exec);
            Ok(())
        })?;
        self.events.send(Event::ExecAdded(TaskExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
            ..Default::default()
        }));
        Ok(())
    }

    fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse, TaskError> {
        self.with(&req.id, |c| {
            let (state, stdio) = match req.exec_id.as_str() {
                "" => (&c.init, &c.stdio),
                e => {
                    let e = c.exec(e)?;
                    (&e.state, &e.stdio)
                }
            };
            let exit = state.exit();
            Ok(api::StateResponse {
                id: if req.exec_id.is_empty() {
                    &req.id
                } else {
                    &req.exec_id
                }
                .clone(),
                bundle: c.bundle.to_string_lossy().into_owned(),
                pid: state.pid(),
                status: state.status().into(),
                stdin: stdio.stdin.clone(),
                stdout: stdio.stdout.clone(),
                stderr: stdio.stderr.clone(),
                terminal: stdio.terminal,
                exit_status: exit.map(|e| e.status).unwrap_or(0),
                exited_at: exit.map(|e| e.timestamp()).into(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            })
        })
    }

    fn pause(&self, id: &str, pause: bool) -> Result<(), TaskError> {
        let (runtime, init) = self.runtime_and_init(id)?;
        if pause {
            runtime.pause(id)?;
            init.set_paused(true);
            self.events.send(Event::Paused(TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            }));
        } else {
            runtime.resume(id)?;
            init.set_paused(false);
            self.events.send(Event::Resumed(TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            }));
        }
        Ok(())
    }

    fn pids(&self, id: &str) -> Result<api::PidsResponse, TaskError> {
        let (runtime, init) = self.runtime_and_init(id)?;
        let pids = match runtime.ps(id) {
            Ok(p) if !p.is_empty() => p,
            // runsc's processes live in the sandbox: report its pid.
            _ => vec![init.pid()],
        };
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn update(&self, req: &api::UpdateTaskRequest) -> Result<(), TaskError> {
        let (runtime, bundle) =
            self.with(&req.id, |c| Ok((c.runtime.clone(), c.bundle.clone())))?;
        let resources = req
            .resources
            .as_ref()
            .map(|r| r.value.clone())
            .unwrap_or_default();
        let file = bundle.join("ember-resources.json");
        std::fs::write(&file, resources).map_err(|source| TaskError::Write {
            id: req.id.clone(),
            path: file.clone(),
            source,
        })?;
        let result = runtime.update(&req.id, &file);
        let _ = std::fs::remove_file(&file);
        Ok(result?)
    }

    fn wait(&self, id: &str, exec_id: &str) -> Result<Exit, TaskError> {
        let state = self.with(id, |c| Ok(Arc::clone(c.process(exec_id)?)))?;
        // Waits without holding the lock: other RPCs go on meanwhile.
        Ok(state.wait())
    }
}

/// Whether a bundle's container joins a pod's existing sandbox, as CRI
/// (containerd's or CRI-O's annotation) says and runsc reads it.
fn joins_pod(bundle: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(bundle.join("config.json")) else {
        return false;
    };
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let kind = |key: &str| spec.pointer(&format!("/annotations/{}", key.replace('/', "~1")));
    [CRI_CONTAINER_TYPE, CRIO_CONTAINER_TYPE]
        .iter()
        .any(|k| kind(k).and_then(|v| v.as_str()) == Some("container"))
}

/// CRI's annotation for a pod's containers: `sandbox` for the pause
/// container, `container` for the others.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

fn delete_response(pid: u32, exit: Exit) -> api::DeleteResponse {
    api::DeleteResponse {
        pid,
        exit_status: exit.status,
        exited_at: Some(exit.timestamp()).into(),
        ..Default::default()
    }
}

/// A signal for an exec'd process: to its host pid where runc wrote one,
/// else to the process group of the `exec` command, whose delegate
/// forwards it (SIGKILL cannot be forwarded: under runsc it ends the
/// command and leaves the process to the container's end).
fn signal_exec(
    id: &str,
    exec_id: &str,
    state: &ProcState,
    pid_file: Option<PathBuf>,
    signal: u32,
) -> Result<(), TaskError> {
    let target = pid_file
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .unwrap_or_else(|| -i32::try_from(state.pid()).unwrap_or(0));
    let sig =
        nix::sys::signal::Signal::try_from(i32::try_from(signal).unwrap_or(0)).map_err(|e| {
            TaskError::BadRequest {
                what: "kill",
                id: id.to_string(),
                reason: format!("signal {signal}: {e}"),
            }
        })?;
    if target == 0 {
        return Err(TaskError::NotStarted {
            what: format!("exec {exec_id} of {id}"),
        });
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(TaskError::BadRequest {
            what: "kill",
            id: id.to_string(),
            reason: format!("exec {exec_id} (pid {target}): {e}"),
        }),
    }
}

/// Follows the reaper's notices: an init (runc, crun) or an exec command
/// that exits is recorded and reported. Other children (runtime commands)
/// are waited for where they were started.
fn watch_exits(inner: Arc<Inner>) {
    let exits = match monitor_subscribe(Topic::Pid) {
        Ok(s) => s,
        Err(e) => {
            log::error!("watching for exits: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        for event in exits.rx.iter() {
            let Subject::Pid(pid) = event.subject else {
                continue;
            };
            let Ok(pid) = u32::try_from(pid) else {
                continue;
            };
            let status = u32::try_from(event.exit_code).unwrap_or(255);
            for (id, exec_id, state) in owners_of(&inner, pid) {
                inner.exited(&id, &exec_id, &state, status);
            }
        }
    });
}

/// The processes of this shim whose pid is `pid`.
fn owners_of(inner: &Inner, pid: u32) -> Vec<(String, String, Arc<ProcState>)> {
    let all = inner.containers();
    let mut found = Vec::new();
    for c in all.values() {
        if c.exit_via == ExitVia::Pid && c.init.pid() == pid && c.init.exit().is_none() {
            found.push((c.id.clone(), String::new(), Arc::clone(&c.init)));
        }
        for (exec_id, e) in &c.execs {
            if e.state.pid() == pid && e.state.exit().is_none() {
                found.push((c.id.clone(), exec_id.clone(), Arc::clone(&e.state)));
            }
        }
    }
    found
}

impl containerd_shim::Task for Service {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        Ok(self.inner.state(&req)?)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = self.inner.create(req)?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let pid = self.inner.start(&req.id, &req.exec_id)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.inner.delete(&req.id, &req.exec_id)?)
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        Ok(self.inner.pids(&req.id)?)
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.inner.pause(&req.id, true)?;
        Ok(api::Empty::default())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.inner.pause(&req.id, false)?;
        Ok(api::Empty::default())
    }

    fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(TaskError::Unsupported("checkpointing a task").into())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.inner.kill(&req)?;
        Ok(api::Empty::default())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        self.inner.exec(req)?;
        Ok(api::Empty::default())
    }

    fn resize_pty(&self, _: &TtrpcContext, _: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        // No process of this shim has a terminal.
        Ok(api::Empty::default())
    }

    fn close_io(&self, _: &TtrpcContext, _: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        // The process holds its stdin itself; containerd closes its end.
        Ok(api::Empty::default())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.inner.update(&req)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let exit = self.inner.wait(&req.id, &req.exec_id)?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(exit.timestamp()).into(),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, _: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        Err(TaskError::Unsupported("task stats (cgroup metrics)").into())
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.inner.with(&req.id, |c| Ok(c.init.pid())).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // One shim serves a whole pod: it ends with its last container.
        if self.inner.containers().is_empty() {
            self.inner.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
