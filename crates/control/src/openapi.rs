//! The OpenAPI document served at `/api/v1/openapi.json`.

/// OpenAPI 3.1 description of the admin API.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_and_names_every_path() {
        let doc: serde_json::Value =
            serde_json::from_str(super::DOCUMENT).unwrap_or_else(|e| panic!("{e}"));
        let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert!(paths >= 20, "{paths} paths");
        assert!(doc["paths"]["/api/v1/apis/{id}/deployments"]["post"].is_object());
        assert!(doc["paths"]["/api/v1/apply"]["post"].is_object());
    }
}
