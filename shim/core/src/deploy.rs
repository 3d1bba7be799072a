//! Getting a deploy's code into the store: the upload (or a host
//! directory, over the Unix socket only) is unpacked by emberd with the
//! hardened, bounded unpacker into a build directory, checked, digested,
//! and, unless the same content is already stored, prepared for its
//! runtime by a deploy build in a throwaway sandbox of the function's
//! backend (`ember_runtimes::build`); the result is copied into the store
//! without following links. emberd itself never runs, imports or follows
//! anything a function supplies.

use crate::daemon::{CodeSource, Daemon, DeployError};
use crate::registry::FunctionSettings;
use crate::settings::Settings;
use ember_api::Language;
use ember_injector::{copy_tree, digest::digest_tree, unpack_tar_gz, CopyRule, Digest, Pin};
use ember_injector::{StoreError, UnpackLimits};
use ember_runtimes::language::build::{BuildDir, BuildError};
use ember_runtimes::Interpreter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static BUILD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Most entries a built tree (code and installed dependencies) may hold.
const BUILT_ENTRIES: u64 = 200_000;

impl Daemon {
    /// Unpack, check, build and seal `code` for a function of `settings`;
    /// returns it pinned in the store.
    pub(crate) async fn store_code(
        &self,
        settings: &FunctionSettings,
        code: CodeSource,
    ) -> Result<Pin, DeployError> {
        let language = settings.runtime;
        let backend = settings
            .backend
            .unwrap_or_else(|| self.default_backend(language));
        let build = self
            .build_config(backend)
            .ok_or_else(|| self.not_running(backend.as_str()))?;
        // Builds are CPU- and memory-heavy: a few at a time.
        let _slot = self.build_slots.acquire().await;
        let id = format!(
            "ember-{}-build-{:06}",
            self.settings.tag,
            BUILD_SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000
        );
        let dir = BuildDir::create(build, &id)?;
        let work = dir.work();
        let limits = UnpackLimits {
            max_bytes: self.settings.max_unpacked_code_bytes,
            ..UnpackLimits::default()
        };
        let unpacked = blocking(move || unpack_into(code, &work, limits)).await?;
        if let Err(e) = unpacked {
            // The build directory is the deploy's disk budget.
            return Err(if out_of_space(&e) {
                BuildError::DiskFull(build.limits.disk_bytes).into()
            } else {
                e
            });
        }
        let work = dir.work();
        let digest = blocking(move || digest_tree(&work)).await?;
        let digest = digest
            .map_err(|source| StoreError::Io {
                path: dir.work(),
                source,
            })
            .and_then(|hex| Digest::parse(&hex).ok_or_else(|| StoreError::Unknown(hex.clone())))?;
        if let Some(pin) = self.store.pin_current(&digest) {
            return Ok(pin);
        }
        let interpreter = Interpreter {
            language,
            path: match language {
                Language::Python => self.settings.python.clone(),
                Language::Node => self.settings.node.clone(),
            },
        };
        self.check_inputs(language, &dir.work())?;
        if needs_build(language, &dir.work()) {
            let report = dir.run(build, &self.cgroups(), &interpreter).await?;
            for step in &report.steps {
                tracing::info!(
                    build = %id,
                    step = %step.name,
                    ms = step.duration_us as f64 / 1000.0,
                    "deploy build step done"
                );
            }
        }
        let store = self.store.clone();
        let work = dir.work();
        let built = UnpackLimits {
            max_bytes: build.limits.disk_bytes,
            max_entries: BUILT_ENTRIES,
        };
        let pin = blocking(move || store.commit_built(&work, digest, built)).await??;
        drop(dir);
        Ok(pin)
    }

    /// What a deploy's code must satisfy before a build may see it.
    fn check_inputs(&self, language: Language, tree: &Path) -> Result<(), DeployError> {
        if language != Language::Python {
            return Ok(());
        }
        let has = ember_runtimes::language::deps::check_requirements(tree)?;
        if has && self.settings.builds.wheels_dir.is_none() {
            return Err(DeployError::NoWheels);
        }
        Ok(())
    }
}

/// Unpack an upload, or copy a host directory, into `work`.
fn unpack_into(code: CodeSource, work: &Path, limits: UnpackLimits) -> Result<(), DeployError> {
    match code {
        CodeSource::TarGz(bytes) => unpack_tar_gz(&bytes, work, limits)?,
        CodeSource::Path(path) => {
            if !path.is_absolute() {
                return Err(DeployError::RelativePath(path));
            }
            copy_tree(&path, work, limits, CopyRule::HostDir)?
        }
    }
    Ok(())
}

/// Whether unpacking failed for want of room in the build directory.
fn out_of_space(e: &DeployError) -> bool {
    matches!(e, DeployError::Store(StoreError::Io { source, .. })
        if source.raw_os_error() == Some(libc::ENOSPC))
}

/// Whether the runtime has anything to do to the tree: Python always
/// compiles bytecode; Node.js checks a `package.json`'s dependencies.
fn needs_build(language: Language, tree: &Path) -> bool {
    match language {
        Language::Python => true,
        Language::Node => std::fs::symlink_metadata(tree.join("package.json")).is_ok(),
    }
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DeployError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(DeployError::Task)
}

/// The build settings of a backend, from emberd's flags.
pub(crate) fn build_limits(settings: &Settings) -> ember_runtimes::language::build::BuildLimits {
    let b = &settings.builds;
    ember_runtimes::language::build::BuildLimits {
        memory_bytes: b.memory_mb * 1024 * 1024,
        pids: b.pids,
        disk_bytes: b.disk_mb * 1024 * 1024,
        timeout: std::time::Duration::from_millis(b.timeout_ms),
    }
}

/// Where a build's wheels come from (bound read-only into it).
pub(crate) fn wheels(settings: &Settings) -> Option<PathBuf> {
    settings.builds.wheels_dir.clone()
}
