//! `ember init` and the function manifest (`ember.json`).

use anyhow::{bail, Context, Result};
use ember_api::DeployOptions;
use std::path::Path;

pub const MANIFEST: &str = "ember.json";

/// `ember.json` in a function directory: `name` and the deploy settings of
/// the API (runtime, handler, mode, timeout_ms, profile, backend, memory_mb, pids,
/// cpu_shares, max_output_bytes, max_event_bytes). Every field is
/// optional; flags to `ember deploy` win over it. Unknown keys are errors.
#[derive(Debug, Default)]
pub struct Manifest {
    pub name: Option<String>,
    pub options: DeployOptions,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)?;
        let name = match map.remove("name") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => bail!("name must be a string, not {other}"),
        };
        let options = serde_json::from_value(serde_json::Value::Object(map))?;
        Ok(Manifest { name, options })
    }

    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                Manifest::parse(&bytes).with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

const PYTHON_MAIN: &str = r#"def handler(event, context):
    """Called once per invocation with the JSON event; return anything JSON-serializable."""
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name}")  # captured: `ember invoke -v` shows it
    return {"greeting": f"Hello, {name}!", "function": context.function_name}
"#;

const NODE_INDEX: &str = r#"// Called once per invocation with the JSON event; return (or resolve to)
// anything JSON-serializable. The module stays loaded between invocations
// of this function (Node.js runs in specialized mode).
exports.handler = async (event, context) => {
  const name = (event && event.name) || "world";
  console.log(`greeting ${name}`); // captured: `ember invoke -v` shows it
  return { greeting: `Hello, ${name}!`, function: context.functionName };
};
"#;

pub fn run(dir: &Path, runtime: &str) -> Result<()> {
    let language = ember_api::validate::runtime(runtime)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("init needs a directory name")?;
    ember_api::validate::function_name(&name)?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (file, text, mode) = match runtime {
        "node" => ("index.js", NODE_INDEX, "specialized"),
        _ => ("main.py", PYTHON_MAIN, "fork"),
    };
    std::fs::write(dir.join(file), text)?;
    let manifest = serde_json::json!({
        "name": name,
        "runtime": runtime,
        "handler": language.default_handler(),
        "mode": mode,
        "timeout_ms": 3000,
        "profile": "default",
        "memory_mb": 256,
    });
    std::fs::write(
        dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    eprintln!(
        "created {0}/{file} and {0}/{MANIFEST}; try it with: ember test {0}; deploy with: ember deploy {0}",
        dir.display()
    );
    Ok(())
}
