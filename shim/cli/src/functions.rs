//! `ember functions`, `ember function NAME`, `ember delete NAME`.

use crate::reply::{decode, ok};
use crate::table::table;
use anyhow::Result;
use ember_api::client::Client;
use ember_api::function::FunctionInfo;
use ember_api::function::FunctionList;
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
            ]
        })
        .collect();
    table(
        &["NAME", "RUNTIME", "MODE", "HANDLER", "TIMEOUT", "CODE"],
        rows,
    );
    Ok(())
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
