//! The admission parser on files: any text is split into YAML documents, loaded as Palisade
//! objects and reviewed against the CRD schemas and the admission rules (what `palisade check`
//! does), and read as a policy file. Nothing panics, and every document that loads gets a
//! report.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_admission::check;
use palisade_admission::schema::{CrdSchemas, SchemaError};

/// Compiled once per process: compiling them is most of a small check's time.
fn schemas() -> &'static Result<CrdSchemas, SchemaError> {
    static SCHEMAS: OnceLock<Result<CrdSchemas, SchemaError>> = OnceLock::new();
    SCHEMAS.get_or_init(CrdSchemas::new)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let loaded = check::split_documents(text)
        .iter()
        .filter(|doc| !matches!(check::load(doc), Ok(None)))
        .count();
    let policies = check::load_policies_with("fuzz.yaml", text, schemas()).unwrap_or_default();
    let reports =
        check::check_with(&[("fuzz.yaml".to_string(), text.to_string())], &policies, schemas());
    assert_eq!(reports.len(), loaded, "a document without a report");
});
