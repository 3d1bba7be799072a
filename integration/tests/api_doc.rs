//! Keeps docs/api.md true: every documented endpoint exists, and the error
//! codes the docs list are exactly the ones the API can answer.

use ember_integration::{prerequisites_met, Daemon};
use std::collections::BTreeSet;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md")
}

/// Rows `| METHOD | path | ... |` of the endpoint table.
fn documented_endpoints() -> Vec<(String, String)> {
    doc()
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let method = cells.get(1)?.trim_matches('`');
            let path = cells.get(2)?.trim_matches('`');
            (["GET", "PUT", "POST", "DELETE"].contains(&method) && path.starts_with("/v1/"))
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn documented_error_codes_match_the_code() {
    let doc = doc();
    let section = doc
        .split("## Error codes")
        .nth(1)
        .expect("error code table");
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`').to_string())
        .filter(|c| !c.is_empty() && c != "code" && !c.starts_with('-'))
        .collect();
    // The socket's API, and the HTTP listener's token check.
    let src = ["api.rs", "dashboard.rs"]
        .map(|f| {
            std::fs::read_to_string(format!("{}/../shim/src/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        })
        .join("\n");
    // Codes are the string literals that follow a StatusCode.
    let mut in_code = BTreeSet::new();
    for chunk in src.split("StatusCode::").skip(1) {
        // The code literal sits right after the status (same tuple/call).
        let near = &chunk[..chunk.len().min(100)];
        if near.matches('"').count() < 2 {
            continue;
        }
        if let Some(lit) = near.split('"').nth(1) {
            if lit.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !lit.is_empty() {
                in_code.insert(lit.to_string());
            }
        }
    }
    assert_eq!(
        documented, in_code,
        "docs/api.md error codes differ from shim/src/api.rs and dashboard.rs"
    );
}

#[test]
fn every_documented_endpoint_exists() {
    if !prerequisites_met("every_documented_endpoint_exists") {
        return;
    }
    let endpoints = documented_endpoints();
    assert!(
        endpoints.len() >= 10,
        "endpoint table not found: {endpoints:?}"
    );
    let mut d = Daemon::start(&["--pool-size", "1"]);
    let tag = d.tag();
    for (method, path) in &endpoints {
        let path = path
            .replace("{name}", "doc-check")
            .replace("{runtime}", "python3");
        let a = d.request(method, &path, "application/json", b"{}");
        let code = if a.status >= 400 {
            a.error_code()
        } else {
            String::new()
        };
        assert!(
            code != "not_found" && code != "method_not_allowed",
            "{method} {path} is documented but answers {} {code}",
            a.status
        );
    }
    d.stop_and_check(&tag);
}
