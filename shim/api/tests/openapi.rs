//! The OpenAPI document is well formed: OpenAPI 3, every reference
//! resolves, every route answers what emberd answers.

use ember_api::openapi::{self, ROUTES, ROUTING_ERRORS};

/// The status docs/api.md's "## Error codes" table gives `code` (the
/// server owns the mapping; its unit test holds it to the same table).
fn status(code: ErrorCode) -> u16 {
    let doc = include_str!("../../../docs/api.md");
    let table = doc
        .split("## Error codes")
        .nth(1)
        .expect("error code table");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| `{code}` |")))
        .unwrap_or_else(|| panic!("{code} is not in docs/api.md"));
    row.split('|').nth(2).unwrap().trim().parse().unwrap()
}

fn document() -> serde_json::Value {
    openapi::document(status)
}
use ember_api::ErrorCode;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The operations of the document: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

#[test]
fn is_an_openapi_3_document() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "emberd API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(!doc["paths"].as_object().unwrap().is_empty());
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for name in [
        "Report",
        "ErrorBody",
        "ErrorCode",
        "FunctionRecord",
        "PoolStatus",
        "Health",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // Every response of every operation has a description (required).
    for (method, path, op) in operations(&doc) {
        for (status, r) in op["responses"].as_object().expect("responses") {
            assert!(r["description"].is_string(), "{method} {path} {status}");
        }
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "only {} references", all.len());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is not local"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn every_schema_is_used() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    let used: BTreeSet<&str> = all
        .iter()
        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
        .collect();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            used.contains(name.as_str()),
            "schema {name} is not referenced"
        );
    }
}

#[test]
fn operations_are_the_route_table() {
    let doc = document();
    let ops = operations(&doc);
    assert_eq!(ops.len(), ROUTES.len());
    let ids: BTreeSet<&str> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ops.len(), "operationIds are unique");
    for (method, path, op) in ops {
        // Every `{param}` of the path is a required path parameter.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                "{method} {path}: no path parameter {name}"
            );
        }
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} has no success"
        );
        assert!(
            responses.contains_key("401"),
            "{method} {path}: unauthorized over HTTP"
        );
    }
}

#[test]
fn error_responses_carry_codes_of_their_status() {
    let doc = document();
    let mut answered = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        for (st, r) in op["responses"].as_object().unwrap() {
            let st: u16 = st.parse().unwrap();
            if st < 400 {
                assert!(r.get("x-error-codes").is_none());
                continue;
            }
            assert_eq!(
                r["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} {st}"
            );
            let codes = r["x-error-codes"].as_array().expect("x-error-codes");
            assert!(!codes.is_empty());
            for c in codes {
                let code: ErrorCode = serde_json::from_value(c.clone()).unwrap();
                assert_eq!(status(code), st, "{method} {path}: {code}");
                assert!(r["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{code}`")));
                answered.insert(code.as_str());
            }
        }
    }
    // Every code is answered by some route, or by the router itself.
    answered.extend(ROUTING_ERRORS.iter().map(|c| c.as_str()));
    let all: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(answered, all);
}

#[test]
fn the_error_code_schema_is_the_closed_set() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let names: Vec<&str> = schema["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, all);
    let description = schema["description"].as_str().unwrap();
    for c in ErrorCode::ALL {
        assert!(
            description.contains(&format!("`{c}`: {}", c.meaning())),
            "{c}"
        );
    }
}

#[test]
fn deploy_takes_tar_gz_or_json_and_answers_201_or_200() {
    let doc = document();
    let put = &doc["paths"]["/v1/functions/{name}"]["put"];
    let content = put["requestBody"]["content"].as_object().unwrap();
    for ctype in [
        "application/gzip",
        "application/x-gzip",
        "application/x-tar+gzip",
        "application/octet-stream",
        "application/json",
    ] {
        assert!(content.contains_key(ctype), "{ctype}");
    }
    assert_eq!(
        content["application/json"]["schema"]["$ref"],
        "#/components/schemas/DeployRequest"
    );
    let request = &doc["components"]["schemas"]["DeployRequest"];
    assert_eq!(request["required"], serde_json::json!(["code"]));
    assert_eq!(request["additionalProperties"], false);
    let code = &doc["components"]["schemas"]["DeployCode"]["oneOf"];
    assert_eq!(code[0]["required"], serde_json::json!(["path"]));
    assert_eq!(code[1]["required"], serde_json::json!(["archive"]));
    // Settings are query parameters with a tar.gz body.
    let query: BTreeSet<&str> = put["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "runtime",
        "handler",
        "timeout_ms",
        "mode",
        "zygote",
        "memory_mb",
        "backend",
    ] {
        assert!(query.contains(name), "{name}");
    }
    for st in ["201", "200"] {
        assert_eq!(
            put["responses"][st]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/FunctionRecord"
        );
    }
    let adopt = &doc["paths"]["/v1/sandboxes"]["post"]["responses"];
    assert!(adopt["201"].is_object() && adopt["200"].is_null());
}

#[test]
fn invoke_takes_any_json_and_metrics_are_text() {
    let doc = document();
    let invoke = &doc["paths"]["/v1/functions/{name}/invoke"]["post"];
    assert_eq!(
        invoke["requestBody"]["content"]["application/json"]["schema"],
        serde_json::json!({})
    );
    assert_eq!(invoke["requestBody"]["required"], false);
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics["text/plain"].is_object(), "{metrics}");
    let logs = &doc["paths"]["/v1/functions/{name}/logs"]["get"]["parameters"];
    let names: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["name", "session", "since", "limit", "output"]);
}

#[test]
fn report_fields_that_may_be_absent_are_not_required() {
    let doc = document();
    let report = &doc["components"]["schemas"]["Report"];
    let required: BTreeSet<&str> = report["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for optional in ["result", "error", "exit_code", "signal"] {
        assert!(!required.contains(optional), "{optional}");
        assert!(report["properties"][optional].is_object(), "{optional}");
    }
    for never in ["memory_mb", "pids"] {
        assert!(
            report["properties"][never].is_null(),
            "{never} is not on the wire"
        );
    }
    assert!(required.contains("outcome") && required.contains("timings_us"));
}
