//! `ember deploy` (upload a function directory as a tar.gz) and `ember
//! test` (run one once in a throwaway sandbox, deploying nothing).

use crate::flags::{query_string, DeployFlags};
use crate::invoke::{read_data, show_invocation};
use crate::reply::{decode, ok};
use crate::{init, pack, phases};
use anyhow::{Context, Result};
use ember_api::client::Client;
use ember_api::FunctionRecord;
use ember_term as progress;
use hyper::Method;
use std::path::PathBuf;

pub async fn deploy(
    client: &Client,
    dir: PathBuf,
    name: Option<String>,
    flags: DeployFlags,
) -> Result<()> {
    let manifest = init::Manifest::load(&dir)?;
    let name = name
        .or_else(|| manifest.as_ref().and_then(|m| m.name.clone()))
        .or_else(|| {
            std::fs::canonicalize(&dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .context("cannot tell the function name: pass --name")?;
    let options = flags.over(manifest.map(|m| m.options).unwrap_or_default());
    let deps = phases::installs_python_deps(&dir, options.runtime.as_deref());
    // Cleared on drop too: an error below is printed on a clean line.
    let spinner = progress::spinner(phases::packing(&dir));
    let archive = pack::tar_gz(&dir)?;
    let query = query_string(&options);
    let path = if query.is_empty() {
        format!("/v1/functions/{name}")
    } else {
        format!("/v1/functions/{name}?{query}")
    };
    spinner.set_message(phases::deploying(archive.len(), deps));
    let answer = client
        .request(Method::PUT, &path, Some("application/gzip"), archive)
        .await;
    spinner.finish_and_clear();
    let f: FunctionRecord = decode(&ok(answer?)?, "a function record")?;
    eprintln!(
        "deployed {} ({}, {}, profile {}, code sha256:{})",
        f.name,
        f.runtime,
        f.handler,
        f.profile,
        &f.digest[..12.min(f.digest.len())]
    );
    Ok(())
}

/// `ember test`: the daemon reads the directory itself (same host), runs it
/// in a sandbox of its own and forgets it.
pub async fn test(
    client: &Client,
    dir: PathBuf,
    data: Option<String>,
    flags: DeployFlags,
) -> Result<()> {
    let manifest = init::Manifest::load(&dir)?;
    let abs = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
    let name = manifest
        .as_ref()
        .and_then(|m| m.name.clone())
        .or_else(|| abs.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let options = flags.over(manifest.map(|m| m.options).unwrap_or_default());
    let event: serde_json::Value =
        serde_json::from_slice(&read_data(data)?).context("--data is not valid JSON")?;
    let mut body = serde_json::to_value(&options)?;
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
        map.insert("name".into(), serde_json::json!(name));
        // Uploaded, as a deploy is: emberd copies only what any user could
        // read from a host path, and takes none over HTTP.
        use base64::Engine;
        let archive = base64::engine::general_purpose::STANDARD.encode(pack::tar_gz(&abs)?);
        map.insert("code".into(), serde_json::json!({ "archive": archive }));
        map.insert("event".into(), event);
    }
    let body = serde_json::to_vec(&body)?;
    let deps = phases::installs_python_deps(&abs, options.runtime.as_deref());
    let spinner = progress::spinner(phases::testing(&dir, deps));
    let answer = client
        .request(Method::POST, "/v1/test", Some("application/json"), body)
        .await;
    spinner.finish_and_clear();
    show_invocation(answer?, true)
}
