//! The language runtimes a sandbox can run, and how the agent is told
//! which one to start.

pub use ember_api::Language;

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
        let flag = match self.language {
            Language::Python => "--python",
            Language::Node => "--node",
        };
        [flag.to_string(), self.path.clone()]
    }
}
