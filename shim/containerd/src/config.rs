//! Which runtime a shim drives, read from the options containerd hands to
//! `Create`: CRI's generic runtime options name a TOML file (`ConfigPath`),
//! as gVisor's shim takes its `runsc.toml`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The type URL of CRI's generic runtime options (containerd 1.6 sends them
/// for any `runtime_type` other than runc's, with `TypeUrl` and
/// `ConfigPath` from the runtime entry's `options` table).
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// Where the shim looks for its config when containerd passes none (e.g.
/// `ctr run --runtime io.containerd.ember.v1`).
pub const DEFAULT_CONFIG: &str = "/etc/ember/containerd-shim.toml";

/// The sandbox runtime `ember-runtime` delegates to. A closed set: the
/// shim knows how each reports pids and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// runc: the container's init is a process of its own on the host.
    #[default]
    Runc,
    /// crun: as runc.
    Crun,
    /// gVisor: every container of a pod reports the sandbox's pid; exits
    /// are learnt from `runsc wait`, not from that pid.
    Runsc,
}

impl RuntimeKind {
    pub fn binary_name(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
            RuntimeKind::Runsc => "runsc",
        }
    }

    /// Whether every container of a pod reports the pod sandbox's pid
    /// (gVisor), so that a joining container's exit is learnt from the
    /// runtime (`runsc wait`) and its signals go through it.
    pub fn reports_sandbox_pid(self) -> bool {
        self == RuntimeKind::Runsc
    }
}

/// The shim's configuration file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    runtime: Option<RuntimeKind>,
    runtime_binary: Option<PathBuf>,
    runtime_args: Option<Vec<String>>,
    ember_runtime: Option<PathBuf>,
    root: Option<PathBuf>,
    profile: Option<String>,
}

/// The configuration a shim runs containers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimConfig {
    pub runtime: RuntimeKind,
    /// The delegate runtime's binary (`runtime_binary`, else its name,
    /// found on PATH).
    pub runtime_binary: PathBuf,
    /// Global flags for the delegate (runsc: `--platform=ptrace
    /// --network=none` unless set).
    pub runtime_args: Vec<String>,
    /// `ember-runtime`, which applies the profiles and hands each command
    /// to the delegate.
    pub ember_runtime: PathBuf,
    /// The runtime's state root; containers live in `<root>/<namespace>`.
    pub root: PathBuf,
    /// The profile for containers without a `dev.ember.profile` annotation.
    pub profile: Option<String>,
}

/// The shim's configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the ember shim config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the ember shim config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("the ember shim config {path}: runtime_args entry {arg:?} has whitespace (each flag is one entry)")]
    ArgWithSpace { path: PathBuf, arg: String },
    #[error("decoding containerd's runtime options ({type_url}): {reason}")]
    Options { type_url: String, reason: String },
}

impl ShimConfig {
    /// The config named by containerd's options (`ConfigPath`), else
    /// `EMBER_SHIM_CONFIG`, else [`DEFAULT_CONFIG`] if it exists, else the
    /// defaults (runc).
    pub fn resolve(config_path: Option<&Path>) -> Result<ShimConfig, ConfigError> {
        let env = std::env::var_os("EMBER_SHIM_CONFIG").map(PathBuf::from);
        let path = config_path.map(Path::to_path_buf).or(env).or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG);
            default.exists().then_some(default)
        });
        match path {
            Some(p) => ShimConfig::load(&p),
            None => Ok(ShimConfig::from_file(ConfigFile::default())),
        }
    }

    pub fn load(path: &Path) -> Result<ShimConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ShimConfig::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ShimConfig, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(arg) = file
            .runtime_args
            .iter()
            .flatten()
            .find(|a| a.chars().any(char::is_whitespace))
        {
            // ember-runtime takes the delegate's flags space-separated.
            return Err(ConfigError::ArgWithSpace {
                path: path.to_path_buf(),
                arg: arg.clone(),
            });
        }
        Ok(ShimConfig::from_file(file))
    }

    fn from_file(file: ConfigFile) -> ShimConfig {
        let runtime = file.runtime.unwrap_or_default();
        let runtime_args = file.runtime_args.unwrap_or_else(|| match runtime {
            // KVM hangs on VMs without nested virtualisation; gVisor's own
            // network stack needs a pod network runsc can take over.
            RuntimeKind::Runsc => vec!["--platform=ptrace".into(), "--network=none".into()],
            _ => Vec::new(),
        });
        ShimConfig {
            runtime,
            runtime_binary: file
                .runtime_binary
                .unwrap_or_else(|| PathBuf::from(runtime.binary_name())),
            runtime_args,
            ember_runtime: file.ember_runtime.unwrap_or_else(default_ember_runtime),
            root: file
                .root
                .unwrap_or_else(|| Path::new("/run/containerd/ember").join(runtime.binary_name())),
            profile: file.profile,
        }
    }
}

/// Where a container's shim config is kept in its bundle, for `delete`
/// after the shim died.
const SAVED_CONFIG: &str = "ember-shim.json";

impl ShimConfig {
    /// Keeps the config a container was created with in its bundle.
    pub fn save(&self, bundle: &Path) {
        let path = bundle.join(SAVED_CONFIG);
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&path, b));
        if let Err(e) = written {
            log::warn!("saving {}: {e}", path.display());
        }
    }

    /// The config [`ShimConfig::save`] kept in `bundle`, if any.
    pub fn load_saved(bundle: &Path) -> Option<ShimConfig> {
        let text = std::fs::read(bundle.join(SAVED_CONFIG)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// `ember-runtime` next to the shim's own binary (an install puts both in
/// one directory), else on PATH.
fn default_ember_runtime() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("ember-runtime")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("ember-runtime"))
}

/// The `ConfigPath` of CRI's generic runtime options
/// (`runtimeoptions.v1.Options`: 1 `type_url`, 2 `config_path`), or `None`
/// for options of another type (e.g. runc's, from `ctr`) or none at all.
pub fn config_path_from_options(
    type_url: &str,
    value: &[u8],
) -> Result<Option<PathBuf>, ConfigError> {
    if type_url.trim_start_matches('/') != RUNTIME_OPTIONS_TYPE {
        return Ok(None);
    }
    let fields = decode_string_fields(value).map_err(|reason| ConfigError::Options {
        type_url: type_url.to_string(),
        reason: reason.to_string(),
    })?;
    Ok(fields
        .into_iter()
        .find(|(n, _)| *n == 2)
        .map(|(_, v)| PathBuf::from(v))
        .filter(|p| !p.as_os_str().is_empty()))
}

/// The length-delimited fields of a protobuf message, as strings; other
/// wire types are skipped. Enough for `runtimeoptions.v1.Options`.
fn decode_string_fields(mut buf: &[u8]) -> Result<Vec<(u64, String)>, &'static str> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length overflows")?;
                let bytes = buf.get(..len).ok_or("truncated field")?;
                let text = std::str::from_utf8(bytes).map_err(|_| "field is not UTF-8")?;
                out.push((key >> 3, text.to_string()));
                buf = &buf[len..];
            }
            _ => return Err("unexpected wire type"),
        }
    }
    Ok(out)
}

fn varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(type_url: &str, config_path: &str) -> Vec<u8> {
        let mut v = vec![0x0a, type_url.len() as u8];
        v.extend_from_slice(type_url.as_bytes());
        v.extend_from_slice(&[0x12, config_path.len() as u8]);
        v.extend_from_slice(config_path.as_bytes());
        v
    }

    #[test]
    fn cri_runtime_options_name_the_config_file() {
        let bytes = options(
            "io.containerd.ember.v1.options",
            "/etc/ember/shim-runsc.toml",
        );
        let path = config_path_from_options("runtimeoptions.v1.Options", &bytes).unwrap();
        assert_eq!(path, Some(PathBuf::from("/etc/ember/shim-runsc.toml")));
    }

    #[test]
    fn other_options_are_not_ours() {
        let bytes = options("x", "/y");
        let path = config_path_from_options("containerd.runc.v1.Options", &bytes).unwrap();
        assert_eq!(path, None);
    }

    #[test]
    fn truncated_options_are_an_error() {
        let mut bytes = options("x", "/etc/ember/a.toml");
        bytes.truncate(6);
        let e = config_path_from_options("runtimeoptions.v1.Options", &bytes).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn runsc_gets_ptrace_and_no_network_by_default() {
        let c = ShimConfig::parse("runtime = \"runsc\"\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.runtime, RuntimeKind::Runsc);
        assert_eq!(c.runtime_binary, PathBuf::from("runsc"));
        assert_eq!(c.runtime_args, ["--platform=ptrace", "--network=none"]);
        assert_eq!(c.root, PathBuf::from("/run/containerd/ember/runsc"));
        assert!(c.runtime.reports_sandbox_pid());
    }

    #[test]
    fn a_saved_config_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShimConfig::parse("runtime = \"runsc\"\n", Path::new("t")).unwrap();
        config.save(dir.path());
        assert_eq!(ShimConfig::load_saved(dir.path()), Some(config));
    }

    #[test]
    fn runc_is_the_default() {
        let c = ShimConfig::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(c.runtime, RuntimeKind::Runc);
        assert!(c.runtime_args.is_empty());
        assert!(!c.runtime.reports_sandbox_pid());
    }

    #[test]
    fn unknown_keys_and_runtimes_are_refused_by_name() {
        let e = ShimConfig::parse("runtim = \"runc\"\n", Path::new("a.toml")).unwrap_err();
        assert!(
            e.to_string().contains("a.toml") && e.to_string().contains("runtim"),
            "{e}"
        );
        let e = ShimConfig::parse("runtime = \"kata\"\n", Path::new("a.toml")).unwrap_err();
        assert!(e.to_string().contains("kata"), "{e}");
    }

    #[test]
    fn an_argument_with_a_space_is_refused() {
        let text = "runtime_args = [\"--platform ptrace\"]\n";
        let e = ShimConfig::parse(text, Path::new("a.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::ArgWithSpace { .. }), "{e}");
    }
}
