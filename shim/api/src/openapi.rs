//! The OpenAPI document of emberd's API (being written).

/// The document `GET /v1/openapi.json` serves.
pub fn document() -> serde_json::Value {
    serde_json::json!({ "openapi": "3.0.3" })
}
