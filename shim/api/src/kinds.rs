//! The closed sets a function and a sandbox are described by: execution
//! mode, language runtime and sandbox backend. Each serializes to the
//! string the API has always used.

use serde::{Deserialize, Serialize};

/// Execution mode of a function's invocations.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A worker forked from the zygote runs one invocation and dies:
    /// nothing survives between invocations (Python's default).
    #[default]
    Fork,
    /// The first invocation binds the sandbox's runner process to the
    /// function; it keeps the function loaded and serves every later
    /// invocation of it (module state survives, like a warm Lambda). The
    /// code stays mounted until the sandbox is recycled.
    Specialized,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Fork, Mode::Specialized];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fork => "fork",
            Mode::Specialized => "specialized",
        }
    }

    pub fn by_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// A language runtime of the sandboxes (`runtime` of a function).
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
pub enum Language {
    /// CPython: a zygote forks a worker per invocation (or a specialized
    /// runner, by choice).
    #[serde(rename = "python3")]
    Python,
    /// Node.js: cannot fork a warm zygote, so always specialized.
    #[serde(rename = "node")]
    Node,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Python, Language::Node];

    /// The API name of the runtime (`runtime` of a function).
    pub fn runtime_name(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::Node => "node",
        }
    }

    pub fn by_runtime(name: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.runtime_name() == name)
    }

    /// Every runtime's name, for messages: `python3, node`.
    pub fn names() -> String {
        let names: Vec<&str> = Language::ALL.iter().map(|l| l.runtime_name()).collect();
        names.join(", ")
    }

    /// Whether a fresh worker per invocation (fork mode) is possible.
    pub fn can_fork(self) -> bool {
        self == Language::Python
    }

    /// The mode of its functions deployed without one.
    pub fn default_mode(self) -> Mode {
        if self.can_fork() {
            Mode::Fork
        } else {
            Mode::Specialized
        }
    }

    /// The handler of its functions deployed without one.
    pub fn default_handler(self) -> &'static str {
        match self {
            Language::Python => "main.handler",
            Language::Node => "index.handler",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.runtime_name())
    }
}

/// What runs a sandbox.
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Runc,
    Crun,
    /// gVisor.
    Runsc,
    /// youki's libcontainer, in process.
    Libcontainer,
    /// A container someone else made (containerd's, through
    /// `ember-runtime`), adopted into a pool; never chosen by a deploy.
    External,
}

impl Backend {
    /// The backends a daemon can run (`--backend`).
    pub const RUNNABLE: [Backend; 4] = [
        Backend::Runc,
        Backend::Crun,
        Backend::Runsc,
        Backend::Libcontainer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Runc => "runc",
            Backend::Crun => "crun",
            Backend::Runsc => "runsc",
            Backend::Libcontainer => "libcontainer",
            Backend::External => "external",
        }
    }

    /// Every runnable backend's name, for messages: `runc, crun, ...`.
    pub fn names() -> String {
        let names: Vec<&str> = Backend::RUNNABLE.iter().map(|b| b.as_str()).collect();
        names.join(", ")
    }

    /// A runnable backend by its name (`external` is none).
    pub fn by_name(name: &str) -> Option<Backend> {
        Backend::RUNNABLE.into_iter().find(|b| b.as_str() == name)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for m in Mode::ALL {
            assert_eq!(Mode::by_name(m.as_str()), Some(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        for l in Language::ALL {
            assert_eq!(Language::by_runtime(l.runtime_name()), Some(l));
            assert_eq!(serde_json::to_value(l).unwrap(), l.runtime_name());
        }
        for b in Backend::RUNNABLE {
            assert_eq!(Backend::by_name(b.as_str()), Some(b));
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
        }
        assert_eq!(serde_json::to_value(Backend::External).unwrap(), "external");
        assert_eq!(Backend::by_name("external"), None);
    }
}
