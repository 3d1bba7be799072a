//! Keeps docs/api.md and the OpenAPI document (`ember_api::openapi`,
//! served at `GET /v1/openapi.json`) true to each other, both ways: the
//! same routes, the same error codes with the same statuses, and the same
//! fields. Only the last test needs root: it asks a real emberd.

use ember_api::openapi;
use ember_api::ErrorCode;
use ember_integration::{prerequisites_met, Daemon};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md")
}

/// The text of the section whose heading line is `heading`, up to the next
/// heading of the same or a higher level.
fn section(doc: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    assert!(
        lines.next().is_some(),
        "no section {heading:?} in docs/api.md"
    );
    lines
        .take_while(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cells of a table row, trimmed (`None` for other lines).
fn cells(line: &str) -> Option<Vec<&str>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// The `backticked` names in `text`.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Rows `| METHOD | path | ... |` of the endpoint table.
fn documented_endpoints() -> BTreeSet<(String, String)> {
    section(&doc(), "## Endpoints")
        .lines()
        .filter_map(cells)
        .filter_map(|c| {
            let method = c.first()?.trim_matches('`');
            let path = c.get(1)?.trim_matches('`');
            (["GET", "PUT", "POST", "DELETE"].contains(&method) && path.starts_with('/'))
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect()
}

/// (method, path) of every operation of the OpenAPI document.
fn document_endpoints(d: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in d["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn documented_endpoints_are_the_documents() {
    let documented = documented_endpoints();
    let served = document_endpoints(&document());
    assert!(
        documented.len() >= 10,
        "endpoint table not found: {documented:?}"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "in the OpenAPI document but not docs/api.md's endpoint table: {undocumented:?}; \
         in the table but not the document: {missing:?}"
    );
}

/// The document with the statuses docs/api.md gives. The server owns the
/// mapping (its unit test holds it to the same table, and the root test
/// below checks that emberd serves exactly this document).
fn document() -> serde_json::Value {
    openapi::document(documented_status)
}

fn documented_status(code: ErrorCode) -> u16 {
    documented_error_codes()[code.as_str()]
}

/// `code -> status` of docs/api.md's "## Error codes" table.
fn documented_error_codes() -> BTreeMap<String, u16> {
    section(&doc(), "## Error codes")
        .lines()
        .filter_map(cells)
        .filter_map(|c| {
            let code = c.first()?.strip_prefix('`')?.strip_suffix('`')?;
            let status = c.get(1)?.parse().ok()?;
            Some((code.to_string(), status))
        })
        .collect()
}

#[test]
fn documented_error_codes_are_the_documents_and_the_codes() {
    let documented = documented_error_codes();
    let d = document();
    let in_document: BTreeSet<String> = d["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let in_code: BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.to_string()).collect();
    let in_docs: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(in_docs, in_document, "docs/api.md vs the OpenAPI document");
    assert_eq!(in_docs, in_code, "docs/api.md vs ErrorCode::ALL");
    // The codes the operations answer, with the status the table gives.
    let mut answered = BTreeSet::new();
    for item in d["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for (status, r) in op["responses"].as_object().unwrap() {
                for code in r["x-error-codes"].as_array().into_iter().flatten() {
                    let code = code.as_str().unwrap();
                    assert_eq!(
                        documented.get(code).map(u16::to_string).as_deref(),
                        Some(status.as_str()),
                        "{code}"
                    );
                    answered.insert(code.to_string());
                }
            }
        }
    }
    answered.extend(openapi::ROUTING_ERRORS.iter().map(|c| c.to_string()));
    assert_eq!(answered, in_docs, "codes no route answers");
}

/// The property sets of the document's schemas, one per object schema (an
/// `allOf` merged, each `oneOf` variant its own), and every property name.
fn schema_objects(d: &Value) -> Vec<BTreeSet<String>> {
    fn props(d: &Value, s: &Value, out: &mut BTreeSet<String>) {
        if let Some(r) = s["$ref"].as_str() {
            let target = d.pointer(r.trim_start_matches('#')).expect("$ref resolves");
            return props(d, target, out);
        }
        if let Some(p) = s["properties"].as_object() {
            out.extend(p.keys().cloned());
        }
        for part in s["allOf"].as_array().into_iter().flatten() {
            props(d, part, out);
        }
    }
    let mut objects = Vec::new();
    for s in d["components"]["schemas"].as_object().unwrap().values() {
        let mut whole = BTreeSet::new();
        props(d, s, &mut whole);
        if !whole.is_empty() {
            objects.push(whole);
        }
        for variant in s["oneOf"].as_array().into_iter().flatten() {
            let mut v = BTreeSet::new();
            props(d, variant, &mut v);
            if !v.is_empty() {
                objects.push(v);
            }
        }
    }
    objects
}

/// Every `` ```json `` block of the docs, parsed.
fn json_examples(doc: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        let t = line.trim();
        match &mut block {
            None if t == "```json" => block = Some(String::new()),
            Some(b) if t == "```" => {
                let v = serde_json::from_str(b)
                    .unwrap_or_else(|e| panic!("a JSON example does not parse ({e}):\n{b}"));
                out.push(v);
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Objects whose keys are data, not fields: an event, a result.
const FREE_FORM: &[&str] = &["event", "result"];

/// Every object in `v` (itself included), but objects marked as cut
/// (`"...": "..."`) and the values of [`FREE_FORM`] keys.
fn objects<'a>(v: &'a Value, out: &mut Vec<&'a serde_json::Map<String, Value>>) {
    match v {
        Value::Object(m) => {
            if !m.contains_key("...") {
                out.push(m);
            }
            m.iter()
                .filter(|(k, _)| !FREE_FORM.contains(&k.as_str()))
                .for_each(|(_, v)| objects(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| objects(v, out)),
        _ => {}
    }
}

#[test]
fn every_field_of_the_document_is_documented() {
    let doc = doc();
    let d = document();
    let mut missing = BTreeSet::new();
    for object in schema_objects(&d) {
        for name in object {
            let documented =
                doc.contains(&format!("`{name}`")) || doc.contains(&format!("\"{name}\":"));
            if !documented {
                missing.insert(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields of the OpenAPI document that docs/api.md never names (as `name` or in an \
         example): {missing:?}"
    );
}

#[test]
fn every_documented_field_is_a_field_of_the_document() {
    let doc = doc();
    let d = document();
    let objects_of_schemas = schema_objects(&d);
    let all: BTreeSet<&str> = objects_of_schemas
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();

    // The field tables: the invocation report, its timings, the deploy
    // settings and their validation.
    let mut tables = 0;
    for header in ["| field |", "| phase |", "| query |"] {
        let mut lines = doc.lines().peekable();
        while let Some(line) = lines.next() {
            if !line.starts_with(header) {
                continue;
            }
            tables += 1;
            lines.next(); // | --- |
            while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
                let first = cells(row).unwrap()[0];
                for name in backticked(first) {
                    assert!(
                        all.contains(name),
                        "docs/api.md's field table row {row:?} names `{name}`, a field of no \
                         schema in the OpenAPI document"
                    );
                }
            }
        }
    }
    assert!(tables >= 4, "field tables not found ({tables})");

    // The JSON examples: each object's keys are those of one schema.
    let examples = json_examples(&doc);
    assert!(examples.len() >= 10, "JSON examples not found");
    for example in &examples {
        let mut found = Vec::new();
        objects(example, &mut found);
        for object in found {
            let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
            assert!(
                objects_of_schemas
                    .iter()
                    .any(|s| keys.iter().all(|k| s.contains(*k))),
                "docs/api.md's example object with keys {keys:?} fits no schema of the \
                 OpenAPI document:\n{example}"
            );
        }
    }
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
    let a = d.get("/v1/openapi.json");
    assert_eq!(a.status, 200, "GET /v1/openapi.json");
    let (served, expected) = (a.json(), document());
    if served != expected {
        // The documents are long: name where they differ, not all of them.
        let mut differ = Vec::new();
        for k in ["paths", "components"] {
            for n in expected[k].as_object().into_iter().flat_map(|o| o.keys()) {
                if served[k][n.as_str()] != expected[k][n.as_str()] {
                    differ.push(format!("{k}.{n}"));
                }
            }
        }
        panic!("emberd serves another document (differs at {differ:?})");
    }
    d.stop_and_check(&tag);
}
