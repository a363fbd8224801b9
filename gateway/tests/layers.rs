//! The gateway's layering, as `src/lib.rs` documents it, holds in the code: every reference
//! to another part of the crate (`crate::x`) goes to a layer listed below the file's own.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers, top first, from the table in the crate's documentation.
fn documented_layers() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs is readable");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split('`').next())
        .map(|name| name.trim_end_matches('/').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a source file belongs to: its top folder, or its file name at the top.
fn layer_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("a file under src");
    let first = rel.components().next().expect("a non-empty path");
    first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Every layer a file names through `crate::` (single paths and `crate::{a, b}` groups).
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            found.extend(inner.split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

#[test]
fn every_import_goes_down_the_documented_layers() {
    let layers = documented_layers();
    assert!(layers.len() >= 10, "the layer table in src/lib.rs was not found: {layers:?}");
    let rank = |name: &str| layers.iter().position(|l| l == name);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let layer = layer_of(&file);
        if layer == "lib" || layer == "main" {
            continue; // the crate root and the binary's entry point wire everything
        }
        let own = rank(&layer).unwrap_or_else(|| {
            panic!("{} is in layer `{layer}`, which src/lib.rs does not list", file.display())
        });
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for target in references(&text) {
            if target == layer {
                continue;
            }
            checked += 1;
            match rank(&target) {
                Some(t) if t > own => {}
                Some(_) => violations.push(format!(
                    "{}: `{layer}` uses `{target}`, which is above it",
                    file.display()
                )),
                None => violations.push(format!(
                    "{}: `{layer}` uses `crate::{target}`, not a documented layer",
                    file.display()
                )),
            }
        }
    }
    assert!(checked > 40, "too few cross-layer references found ({checked}); is the scan broken?");
    assert!(violations.is_empty(), "imports against the layering:\n{}", violations.join("\n"));
}

#[test]
fn every_module_of_the_crate_is_a_documented_layer() {
    let layers = documented_layers();
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs is readable");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(!modules.is_empty());
    for m in &modules {
        assert!(layers.iter().any(|l| l == m), "module `{m}` is missing from the layer table");
    }
    for l in &layers {
        assert!(modules.contains(&l.as_str()), "the layer table lists `{l}`, which is no module");
    }
}
