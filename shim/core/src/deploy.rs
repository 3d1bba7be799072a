//! Getting a deploy's code into the store: the upload (or a host
//! directory, or the tree of a git commit, over the Unix socket only:
//! `git.rs`) is unpacked by emberd with the
//! hardened, bounded unpacker into a build directory, checked, digested,
//! and, unless the same content is already stored, prepared for its
//! runtime by a deploy build in a throwaway sandbox of the function's
//! backend (`ember_runtimes::build`); the result is copied into the store
//! without following links. emberd itself never runs, imports or follows
//! anything a function supplies.

use crate::daemon::{CodeSource, Daemon, DeployError};
use crate::git::{GitError, GitRequest, GitSetup};
use crate::registry::FunctionSettings;
use crate::settings::Settings;
use ember_api::function::{CodeOrigin, GitOrigin};
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
        Ok(self.store_code_from(settings, code).await?.0)
    }

    /// [`Daemon::store_code`], and where the code came from when emberd
    /// fetched it itself (a git commit).
    pub(crate) async fn store_code_from(
        &self,
        settings: &FunctionSettings,
        code: CodeSource,
    ) -> Result<(Pin, Option<CodeOrigin>), DeployError> {
        // Checked before any slot or directory is taken.
        let code = match code {
            CodeSource::Git(g) => Source::Git(GitRequest::check(&g)?),
            other => Source::Plain(other),
        };
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
        let git = self.git_setup();
        let unpacked = blocking(move || unpack_into(code, &work, limits, &git)).await?;
        let origin = match unpacked {
            Ok(origin) => origin,
            // The build directory is the deploy's disk budget.
            Err(e) if out_of_space(&e) => {
                return Err(BuildError::DiskFull(build.limits.disk_bytes).into())
            }
            Err(e) => return Err(e),
        };
        if let Some(origin) = &origin {
            check_handler(settings, &dir.work(), origin)?;
        }
        let origin = origin.map(CodeOrigin::Git);
        let work = dir.work();
        let digest = blocking(move || digest_tree(&work)).await?;
        let digest = digest
            .map_err(|source| StoreError::Io {
                path: dir.work(),
                source,
            })
            .and_then(|hex| Digest::parse(&hex).ok_or_else(|| StoreError::Unknown(hex.clone())))?;
        if let Some(pin) = self.store.pin_current(&digest) {
            return Ok((pin, origin));
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
        Ok((pin, origin))
    }

    /// How this daemon runs git: in its builds directory, as an id of the
    /// sandboxes' user namespace range, within `--git-timeout-s`, in twice
    /// the code's room.
    fn git_setup(&self) -> GitSetup {
        GitSetup {
            scratch_parent: self.settings.builds_dir(),
            ids: Some((
                self.settings.userns,
                PathBuf::from(ember_runtimes::userns::LOCK_DIR),
            )),
            timeout: std::time::Duration::from_secs(self.settings.git_timeout_s),
            clone_bytes: self.settings.max_unpacked_code_bytes.saturating_mul(2),
        }
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

/// A deploy's code, its git request checked.
enum Source {
    Plain(CodeSource),
    Git(GitRequest),
}

/// Unpack an upload, copy a host directory, or unpack a git commit's
/// tree, into `work`; for git, the commit it took.
fn unpack_into(
    code: Source,
    work: &Path,
    limits: UnpackLimits,
    git: &GitSetup,
) -> Result<Option<GitOrigin>, DeployError> {
    match code {
        Source::Plain(CodeSource::TarGz(bytes)) => unpack_tar_gz(&bytes, work, limits)?,
        Source::Plain(CodeSource::Path(path)) => {
            if !path.is_absolute() {
                return Err(DeployError::RelativePath(path));
            }
            copy_tree(&path, work, limits, CopyRule::HostDir)?
        }
        Source::Plain(CodeSource::Git(g)) => {
            let req = GitRequest::check(&g)?;
            return unpack_into(Source::Git(req), work, limits, git);
        }
        Source::Git(req) => {
            return match crate::git::fetch(&req, git, work, limits) {
                Ok(origin) => Ok(Some(origin)),
                // The unpacker's errors answer as an upload's would.
                Err(GitError::Unpack(e)) => Err(e.into()),
                Err(e) => Err(e.into()),
            };
        }
    }
    Ok(None)
}

/// A git deploy's tree holds the handler's file: refused here, with the
/// names looked for, rather than at its first invocation.
fn check_handler(
    settings: &FunctionSettings,
    tree: &Path,
    origin: &GitOrigin,
) -> Result<(), DeployError> {
    let (candidates, looked_for) = handler_files(settings.runtime, &settings.handler);
    let exists = |rel: &str| std::fs::symlink_metadata(tree.join(rel)).is_ok();
    if candidates.iter().any(|c| exists(c)) || python_extension(settings, tree) {
        return Ok(());
    }
    let short = &origin.commit[..12.min(origin.commit.len())];
    let place = match &origin.subdir {
        Some(sub) => format!("{sub}/ of {} at {short}", origin.repo),
        None => format!("{} at {short}", origin.repo),
    };
    Err(DeployError::NoHandler {
        handler: settings.handler.clone(),
        looked_for: format!("{looked_for} in {place}"),
    })
}

/// The files that would hold `handler`'s code, and how to say so.
fn handler_files(language: Language, handler: &str) -> (Vec<String>, String) {
    let file = handler.rsplit_once('.').map_or(handler, |(f, _)| f);
    match language {
        Language::Python => {
            let module = file.replace('.', "/");
            (
                vec![
                    format!("{module}.py"),
                    module.clone(),
                    format!("{module}.pyc"),
                ],
                format!("no {module}.py, package {module}/ or extension module"),
            )
        }
        Language::Node => (
            ["", ".js", ".mjs", ".cjs"]
                .iter()
                .map(|ext| format!("{file}{ext}"))
                .collect(),
            format!("no {file}.js, {file}.mjs or {file}.cjs"),
        ),
    }
}

/// A Python handler module that is an extension (`main.cpython-311-x86_64-linux-gnu.so`).
fn python_extension(settings: &FunctionSettings, tree: &Path) -> bool {
    if settings.runtime != Language::Python {
        return false;
    }
    let file = settings
        .handler
        .rsplit_once('.')
        .map_or(settings.handler.as_str(), |(f, _)| f);
    let module = file.replace('.', "/");
    let (dir, stem) = match module.rsplit_once('/') {
        Some((d, s)) => (tree.join(d), s.to_string()),
        None => (tree.to_path_buf(), module),
    };
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&format!("{stem}.")) && name.ends_with(".so")
        })
    })
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
