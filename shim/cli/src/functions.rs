//! `ember functions`, `ember function NAME`, `ember delete NAME`,
//! `ember pause NAME`, `ember resume NAME`.

use crate::reply::{decode, ok};
use crate::table::table;
use anyhow::Result;
use ember_api::client::Client;
use ember_api::function::FunctionInfo;
use ember_api::function::FunctionList;
use ember_api::FunctionRecord;
use hyper::Method;

/// The deployed functions, as a table or (`json`) emberd's reply.
pub async fn functions(client: &Client, json: bool) -> Result<()> {
    let a = ok(client.get("/v1/functions").await?)?;
    let list: FunctionList = decode(&a, "a function list")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a.json())?);
        return Ok(());
    }
    let rows = list
        .functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.runtime.to_string(),
                f.mode.as_str().to_string(),
                f.handler.clone(),
                format!("{}ms", f.timeout_ms),
                f.digest.chars().take(12).collect(),
                source(f),
                state(f).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "RUNTIME", "MODE", "HANDLER", "TIMEOUT", "CODE", "SOURCE", "STATE",
        ],
        rows,
    );
    Ok(())
}

/// Where the code came from, when emberd fetched it: `git REF@COMMIT`.
fn source(f: &ember_api::FunctionRecord) -> String {
    match &f.source {
        Some(ember_api::function::CodeOrigin::Git(g)) => {
            format!(
                "git {}@{}",
                g.reference,
                &g.commit[..12.min(g.commit.len())]
            )
        }
        None => "-".into(),
    }
}

/// One function, as emberd's reply.
pub async fn function(client: &Client, name: &str) -> Result<()> {
    let a = ok(client.get(&format!("/v1/functions/{name}")).await?)?;
    let _: FunctionInfo = decode(&a, "a function")?;
    println!("{}", serde_json::to_string_pretty(&a.json())?);
    Ok(())
}

pub async fn delete(client: &Client, name: &str) -> Result<()> {
    ok(client
        .request(Method::DELETE, &format!("/v1/functions/{name}"), None, "")
        .await?)?;
    eprintln!("deleted {name}");
    Ok(())
}

/// `ember functions`' STATE column.
fn state(f: &FunctionRecord) -> &'static str {
    match f.paused {
        true => "paused",
        false => "active",
    }
}

/// Pause (`paused`) or resume a function; says so on stderr.
pub async fn pause(client: &Client, name: &str, paused: bool) -> Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let a = ok(client
        .request(
            Method::POST,
            &format!("/v1/functions/{name}/{verb}"),
            None,
            "",
        )
        .await?)?;
    let f: FunctionRecord = decode(&a, "a function")?;
    eprintln!("{name} is {}", if f.paused { "paused" } else { "active" });
    Ok(())
}
