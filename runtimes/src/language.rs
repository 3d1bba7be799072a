//! The language runtimes a sandbox can run, and how the agent is told
//! which one to start.

/// A language runtime of the sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// CPython: a zygote forks a worker per invocation (or a specialized
    /// runner, by choice).
    Python,
    /// Node.js: cannot fork a warm zygote, so always specialized.
    Node,
}

impl Language {
    /// The API name of the runtime (`runtime` of a function).
    pub fn runtime_name(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::Node => "node",
        }
    }

    pub fn by_runtime(name: &str) -> Option<Language> {
        match name {
            "python3" => Some(Language::Python),
            "node" => Some(Language::Node),
            _ => None,
        }
    }

    /// Whether a fresh worker per invocation (fork mode) is possible.
    pub fn can_fork(self) -> bool {
        self == Language::Python
    }

    /// The agent flag that names the interpreter.
    fn agent_flag(self) -> &'static str {
        match self {
            Language::Python => "--python",
            Language::Node => "--node",
        }
    }
}

/// The interpreter a sandbox's agent starts: which language, at which
/// path inside the sandbox (the host's `/usr` is bound in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub language: Language,
    pub path: String,
}

impl Interpreter {
    /// The agent's command-line arguments that select it.
    pub fn agent_args(&self) -> [String; 2] {
        [self.language.agent_flag().to_string(), self.path.clone()]
    }
}
