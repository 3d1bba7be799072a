//! Language runtimes: which interpreters a sandbox can run and how the
//! agent is told to start one, and what a deploy does for a language: its
//! dependencies checked (`deps`) and installed, and its bytecode compiled,
//! by a build in a throwaway sandbox (`build`).

pub mod build;
pub mod deps;

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
