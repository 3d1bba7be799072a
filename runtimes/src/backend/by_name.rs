//! Which backend a name means: the one place that knows every backend
//! (the CLI-driven ones and libcontainer's), so neither
//! needs to know the other.

use crate::backend::cli_driver::CliDriver;
use crate::backend::{Backend, BackendOptions, CliBackend, Injection};
use crate::error::RuntimeError;
use std::path::PathBuf;

/// Build the backend called `name`.
pub fn backend_by_name(
    name: &str,
    opts: &BackendOptions,
) -> Result<std::sync::Arc<dyn Backend>, RuntimeError> {
    let (name, injection, global_args): (&'static str, Injection, Vec<String>) = match name {
        "runc" => ("runc", Injection::MountNamespace, vec![]),
        "crun" => ("crun", Injection::MountNamespace, vec![]),
        "libcontainer" => {
            return Ok(std::sync::Arc::new(
                crate::backend::libcontainer::LibcontainerBackend,
            ))
        }
        "runsc" => (
            "runsc",
            Injection::HostDirectory,
            vec![
                format!("--platform={}", opts.runsc_platform),
                // Sandboxes have no network; gVisor's netstack would
                // otherwise want the container's network namespace set up.
                "--network=none".into(),
                // The root filesystem is read-only binds; an overlay would
                // only cost memory.
                "--overlay2=none".into(),
                // Bind mounts (`/fn`) revalidate against the host, so code
                // linked in after start is seen (the default, made explicit).
                "--file-access-mounts=shared".into(),
            ],
        ),
        other => {
            return Err(RuntimeError::UnknownBackend {
                name: other.to_string(),
                known: ember_api::Backend::names(),
            })
        }
    };
    Ok(std::sync::Arc::new(CliBackend {
        name,
        injection,
        cli: CliDriver {
            binary: opts.binary.clone().unwrap_or_else(|| PathBuf::from(name)),
            root: opts.root.clone(),
            global_args,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_built_by_name() {
        let opts = BackendOptions {
            runsc_platform: "ptrace".into(),
            ..Default::default()
        };
        for backend in ember_api::Backend::RUNNABLE {
            let b = backend_by_name(backend.as_str(), &opts).unwrap();
            assert_eq!(b.name(), backend.as_str());
        }
        let runsc = backend_by_name("runsc", &opts).unwrap();
        assert_eq!(runsc.injection(), Injection::HostDirectory);
        let err = backend_by_name("youki", &opts).unwrap_err().to_string();
        assert!(
            err.contains("youki") && err.contains("runc, crun, runsc"),
            "{err}"
        );
    }
}
