//! `ember pool`, `ember sandboxes`, `ember kill ID`.

use crate::reply::{decode, ok};
use crate::table::table;
use anyhow::Result;
use ember_api::client::Client;
use ember_api::pool::{Killed, PoolList, SandboxList};
use ember_api::{PoolStatus, SandboxState, SandboxStatus};
use hyper::Method;

/// The warm pools, as a table or (`json`) emberd's reply.
pub async fn pools(client: &Client, json: bool) -> Result<()> {
    let a = ok(client.get("/v1/pools").await?)?;
    let list: PoolList = decode(&a, "a pool list")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a.json())?);
        return Ok(());
    }
    table(
        &[
            "RUNTIME", "BACKEND", "TARGET", "MIN", "MAX_WARM", "MAX", "IDLE", "BOUND", "BUSY",
            "CREATING", "WARM", "HOT", "COLD",
        ],
        list.pools.iter().map(pool_row).collect(),
    );
    Ok(())
}

fn pool_row(p: &PoolStatus) -> Vec<String> {
    vec![
        p.runtime.to_string(),
        p.backend.to_string(),
        p.target.to_string(),
        p.min_warm.to_string(),
        p.max_warm.to_string(),
        p.max.to_string(),
        p.idle.to_string(),
        p.bound.to_string(),
        p.busy.to_string(),
        p.creating.to_string(),
        p.warm_starts_total.to_string(),
        p.hot_starts_total.to_string(),
        p.cold_starts_total.to_string(),
    ]
}

/// The sandboxes, as a table or (`json`) emberd's reply.
pub async fn sandboxes(client: &Client, json: bool) -> Result<()> {
    let a = ok(client.get("/v1/sandboxes").await?)?;
    let list: SandboxList = decode(&a, "a sandbox list")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a.json())?);
        return Ok(());
    }
    table(
        &[
            "ID",
            "RUNTIME",
            "STATE",
            "PID",
            "INVOCATIONS",
            "BOUND TO",
            "FUNCTION",
        ],
        list.sandboxes.iter().map(sandbox_row).collect(),
    );
    Ok(())
}

fn sandbox_row(b: &SandboxStatus) -> Vec<String> {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    vec![
        b.id.clone(),
        b.runtime.to_string(),
        state_name(b.state).to_string(),
        b.pid.to_string(),
        b.invocations.to_string(),
        dash(&b.bound_to),
        dash(&b.function),
    ]
}

/// A sandbox's state as the API spells it.
fn state_name(state: SandboxState) -> &'static str {
    state.as_str()
}

/// End the invocation running in sandbox `id`.
pub async fn kill(client: &Client, id: &str) -> Result<()> {
    let a = ok(client
        .request(Method::POST, &format!("/v1/sandboxes/{id}/kill"), None, "")
        .await?)?;
    let Killed { killed } = decode(&a, "a killed invocation")?;
    eprintln!(
        "killed invocation {} of {} in sandbox {id}",
        killed.invocation, killed.function
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_states_are_spelt_as_the_api_does() {
        for s in [
            SandboxState::Idle,
            SandboxState::Busy,
            SandboxState::Returning,
            SandboxState::Session,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), state_name(s));
        }
    }
}
