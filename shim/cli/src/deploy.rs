//! `ember deploy` (upload a function directory as a tar.gz, or name a git
//! repository emberd fetches itself) and `ember test` (run one once in a
//! throwaway sandbox, deploying nothing).

use crate::flags::{query_string, DeployFlags};
use crate::invoke::{read_data, show_invocation};
use crate::reply::{decode, ok};
use crate::{init, pack, phases};
use anyhow::{Context, Result};
use ember_api::client::Client;
use ember_api::function::{CodeOrigin, GitCode};
use ember_api::{DeployOptions, FunctionRecord};
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
    report_deployed(&f);
    Ok(())
}

/// `ember deploy NAME --git REPO [--ref REF] [--subdir DIR]`.
pub struct GitArgs {
    pub repo: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

/// `ember deploy NAME --git REPO`: emberd clones and unpacks; this runs
/// no git and reads nothing of the repository.
pub async fn deploy_git(
    client: &Client,
    name: PathBuf,
    git: GitArgs,
    flags: DeployFlags,
) -> Result<()> {
    let name = name
        .to_str()
        .context("the function name is not UTF-8")?
        .to_string();
    let code = GitCode {
        repo: repo_arg(&git.repo)?,
        reference: git.reference,
        subdir: git.subdir,
    };
    let mut body = serde_json::to_value(flags.over(DeployOptions::default()))?;
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
        map.insert("code".into(), serde_json::json!({ "git": code }));
    }
    let spinner = progress::spinner(format!("emberd is fetching {}", code.repo));
    let answer = client
        .request(
            Method::PUT,
            &format!("/v1/functions/{name}"),
            Some("application/json"),
            serde_json::to_vec(&body)?,
        )
        .await;
    spinner.finish_and_clear();
    let f: FunctionRecord = decode(&ok(answer?)?, "a function record")?;
    report_deployed(&f);
    Ok(())
}

/// What a deploy made, on stderr: the function, and where its code came
/// from when that was a git repository.
fn report_deployed(f: &FunctionRecord) {
    let from = match &f.source {
        Some(CodeOrigin::Git(g)) => format!(
            ", git {} at {}{}",
            g.reference,
            &g.commit[..12.min(g.commit.len())],
            g.subdir
                .as_deref()
                .map(|s| format!(" in {s}/"))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    eprintln!(
        "deployed {} ({}, {}, profile {}, code sha256:{}{from})",
        f.name,
        f.runtime,
        f.handler,
        f.profile,
        &f.digest[..12.min(f.digest.len())]
    );
}

/// `--git`'s value as emberd needs it: a URL as given, a local path
/// made canonical and absolute (emberd resolves nothing relative).
fn repo_arg(repo: &str) -> Result<String> {
    if repo.contains("://") {
        return Ok(repo.to_string());
    }
    let path = std::fs::canonicalize(repo)
        .with_context(|| format!("--git {repo}: not a URL, and no such local path"))?;
    path.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("--git {}: the path is not UTF-8", p.to_string_lossy()))
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

#[cfg(test)]
mod tests {
    use super::repo_arg;

    #[test]
    fn a_local_repo_goes_as_its_canonical_path_a_url_as_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let messy = dir.path().join("repo/../repo/.");
        let want = std::fs::canonicalize(dir.path().join("repo")).unwrap();
        assert_eq!(
            repo_arg(messy.to_str().unwrap()).unwrap(),
            want.to_str().unwrap()
        );
        for url in ["https://example.com/r.git", "file:///srv/r"] {
            assert_eq!(repo_arg(url).unwrap(), url);
        }
        assert!(repo_arg("/no/such/repo/anywhere").is_err());
    }
}
