//! The shim's process life as containerd drives it: `start` (find or spawn
//! the pod's shim and print its address), serving, and `delete` (clean up
//! after a shim that died).

use crate::config::ShimConfig;
use crate::container::unmount_rootfs;
use crate::events::Events;
use crate::runtime::Runtime;
use crate::service::Service;
use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, StartOpts};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The annotation CRI puts on every container of a pod: the pod's
/// sandbox (pause) container id. All containers of a pod share one shim,
/// as they share one gVisor sandbox.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct EmberShim {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
    bundle: PathBuf,
}

impl containerd_shim::Shim for EmberShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        if args.action.is_empty() {
            // Serving: outlive a containerd restart (its process group).
            let _ = nix::unistd::setsid();
        }
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        EmberShim {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = pod_of(&self.bundle).unwrap_or_else(|| opts.id.clone());
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        if let Some(config) = ShimConfig::load_saved(&self.bundle) {
            let runtime = Runtime::new(config, &self.namespace);
            if let Err(e) = runtime.delete(&self.id) {
                log::warn!("cleaning up {} after its shim: {e}", self.id);
            }
        }
        unmount_rootfs(&self.bundle);
        let exit = crate::process::Exit::now(128 + libc::SIGKILL as u32);
        Ok(DeleteResponse {
            exit_status: exit.status,
            exited_at: Some(exit.timestamp()).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        let events = Events::start(publisher, self.namespace.clone());
        Service::new(self.namespace.clone(), events, Arc::clone(&self.exit))
    }
}

/// The pod a bundle's container belongs to, from its CRI annotation.
fn pod_of(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    let id = spec
        .get("annotations")?
        .get(SANDBOX_ID_ANNOTATION)?
        .as_str()?;
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_of_a_pod_group_by_its_sandbox_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pod_of(dir.path()), None);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"abc123","x":"y"}}"#,
        )
        .unwrap();
        assert_eq!(pod_of(dir.path()).as_deref(), Some("abc123"));
    }
}
