//! emberd's Kubernetes deployment as this checkout ships it, for the
//! tests that check and run it (`tests/install.rs`, `tests/cri.rs`): the
//! manifests in `deploy/kubernetes/` read by structure (a small YAML
//! reader), and the image `scripts/build-image` makes.

use crate::{agent_path, bin_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

// ---- a YAML reader for the manifests ---------------------------------

/// The documents of a YAML file, in the block style the manifests are
/// written in: mappings, sequences (`- `), comments, quoted and plain
/// scalars, flow sequences of scalars (`["a", "b"]`). Enough to check the
/// manifests by structure instead of by string.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        if raw.trim_end() == "---" {
            if !lines.is_empty() {
                docs.push(yaml_block(&mut lines, &mut 0));
                lines.clear();
            }
            continue;
        }
        let line = strip_comment(raw).trim_end().to_string();
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        lines.push((indent, line.trim_start().to_string()));
    }
    if !lines.is_empty() {
        docs.push(yaml_block(&mut lines, &mut 0));
    }
    docs
}

fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn yaml_block(lines: &mut [(usize, String)], pos: &mut usize) -> Value {
    let indent = lines[*pos].0;
    if lines[*pos].1 == "-" || lines[*pos].1.starts_with("- ") {
        let mut items = Vec::new();
        while *pos < lines.len() && lines[*pos].0 == indent && lines[*pos].1.starts_with('-') {
            let rest = lines[*pos].1[1..].trim_start().to_string();
            if rest.is_empty() {
                *pos += 1;
                items.push(yaml_block(lines, pos));
            } else if yaml_key(&rest).is_some() {
                // `- key: value`: a mapping whose keys line up with `key`.
                let at = indent + (lines[*pos].1.len() - rest.len());
                lines[*pos] = (at, rest);
                items.push(yaml_block(lines, pos));
            } else {
                items.push(yaml_scalar(&rest));
                *pos += 1;
            }
        }
        return Value::Array(items);
    }
    let mut map = serde_json::Map::new();
    while *pos < lines.len() && lines[*pos].0 == indent && !lines[*pos].1.starts_with("- ") {
        let line = lines[*pos].1.clone();
        let (key, value) = yaml_key(&line).unwrap_or_else(|| panic!("not a mapping entry: {line}"));
        *pos += 1;
        let v = if !value.is_empty() {
            yaml_scalar(value)
        } else if *pos < lines.len() && lines[*pos].0 > indent {
            yaml_block(lines, pos)
        } else {
            Value::Null
        };
        map.insert(key.to_string(), v);
    }
    Value::Object(map)
}

/// `key: value` (or `key:`), outside quotes.
fn yaml_key(line: &str) -> Option<(&str, &str)> {
    if line.starts_with(['"', '\'', '[', '{']) {
        return None;
    }
    let i = line
        .find(": ")
        .or_else(|| line.ends_with(':').then(|| line.len() - 1))?;
    Some((line[..i].trim(), line[i + 1..].trim()))
}

fn yaml_scalar(s: &str) -> Value {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let mut items = Vec::new();
        let (mut cur, mut quote) = (String::new(), None);
        for c in inner.chars() {
            match (c, quote) {
                ('"' | '\'', None) => {
                    quote = Some(c);
                    cur.push(c);
                }
                (q, Some(open)) if q == open => {
                    quote = None;
                    cur.push(c);
                }
                (',', None) => items.push(yaml_scalar(&std::mem::take(&mut cur))),
                _ => cur.push(c),
            }
        }
        if !cur.trim().is_empty() {
            items.push(yaml_scalar(&cur));
        }
        return Value::Array(items);
    }
    if let Some(q) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Value::String(q.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    if let Some(q) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Value::String(q.replace("''", "'"));
    }
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" => Value::Null,
        _ => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(s.to_string())),
    }
}

pub fn manifest(name: &str) -> Vec<Value> {
    let path = repo().join("deploy/kubernetes").join(name);
    yaml_documents(&std::fs::read_to_string(&path).expect("manifest"))
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The DaemonSet's emberd container and pod spec.
pub fn daemonset() -> (Value, Value) {
    let docs = manifest("daemonset.yaml");
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds.len(), 1, "one DaemonSet");
    let pod = ds[0]["spec"]["template"]["spec"].clone();
    let containers = pod["containers"].as_array().expect("containers").clone();
    assert_eq!(containers.len(), 1, "one container: emberd");
    (containers[0].clone(), pod)
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The DaemonSet's host mounts: (path in the pod, host path, read-only).
pub fn host_mounts(container: &Value, pod: &Value) -> Vec<(String, String, bool)> {
    let volumes = pod["volumes"].as_array().expect("volumes");
    container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("mount name");
            let vol = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volumeMount {name} names no volume"));
            let host = vol["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("volume {name} is not a hostPath"));
            (
                m["mountPath"].as_str().expect("mountPath").to_string(),
                host.to_string(),
                m["readOnly"] == true,
            )
        })
        .collect()
}

/// The DaemonSet's host mounts as a test makes them, emberd's run and
/// state directories (`/run/ember`, `/var/lib/ember`) taken from `run`
/// and `state` (created) instead of the node's, whose own emberd is not
/// touched: (path in the pod, host path, read-only).
pub fn test_host_mounts(
    container: &Value,
    pod: &Value,
    run: &Path,
    state: &Path,
) -> Vec<(String, PathBuf, bool)> {
    host_mounts(container, pod)
        .into_iter()
        .map(|(at, host, ro)| {
            let source = match at.as_str() {
                "/run/ember" => run.to_path_buf(),
                "/var/lib/ember" => state.to_path_buf(),
                _ => PathBuf::from(&host),
            };
            std::fs::create_dir_all(&source).expect("host mount source");
            (at, source, ro)
        })
        .collect()
}

/// Assert that an emberd that stopped left nothing in the run directory
/// `run` it had as `/run/ember` (its socket and its own run directory
/// gone) but `userns`, the user-namespace id locks shared by the node's
/// emberd processes.
pub fn assert_run_dir_left_empty(run: &Path) {
    let left: Vec<String> = std::fs::read_dir(run)
        .expect("run directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "userns")
        .collect();
    assert!(left.is_empty(), "left in the run directory: {left:?}");
}

// ---- the image ----------------------------------------------------------

/// An image archive [`build_image`] made.
pub struct BuiltImage {
    /// What `scripts/build-image` printed: the archive's path and the
    /// image's name.
    pub printed: Vec<String>,
    /// How long it took.
    pub took: Duration,
    /// Built as shipped (static release builds), not from the debug builds.
    pub release: bool,
}

/// `scripts/build-image --out OUT` from the debug builds the suite has
/// just made (`--from` the binaries' directory: they link the node's C
/// library through the node's `/usr`), with the agent the tests use;
/// under `EMBER_IMAGE_BUILD=release`, as shipped (static release builds:
/// the first one takes minutes). Panics with its stderr if it fails.
pub fn build_image(out: &Path) -> BuiltImage {
    let started = Instant::now();
    let release = std::env::var("EMBER_IMAGE_BUILD").as_deref() == Ok("release");
    let mut build = Command::new(repo().join("scripts/build-image"));
    if !release {
        build.arg("--from").arg(bin_dir());
    }
    let output = build
        .arg("--agent")
        .arg(agent_path())
        .arg("--out")
        .arg(out)
        .output()
        .expect("run scripts/build-image");
    assert!(
        output.status.success(),
        "build-image: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    BuiltImage {
        printed: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(String::from)
            .collect(),
        took: started.elapsed(),
        release,
    }
}
