//! The invariants of ARCHITECTURE.md that a program can check, checked over the source
//! text (as rust-analyzer's tidy tests do). Test code (a file's `#[cfg(test)]` part) and
//! comments are left out of every check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its code before `#[cfg(test)]` and without
/// comment lines.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .to_path_buf();
            (relative, code.join("\n"))
        })
        .collect()
}

fn under(path: &Path, dir: &str) -> bool {
    path.starts_with(Path::new("src").join(dir))
}

/// A string literal of five characters that is a SQLSTATE: digits and capitals, with
/// PostgreSQL's class first (two characters, one of them a digit or the class XX).
fn sqlstate_literals(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for (i, _) in code.match_indices('"') {
        let Some(candidate) = code.get(i + 1..i + 6) else {
            continue;
        };
        if !candidate.is_ascii()
            || bytes.get(i + 6) != Some(&b'"')
            || bytes.get(i.wrapping_sub(1)) == Some(&b'\\')
        {
            continue;
        }
        let shaped = candidate
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
        let class = &candidate[..2];
        let is_class = class == "XX" || class.chars().any(|c| c.is_ascii_digit());
        let has_digit = candidate.chars().any(|c| c.is_ascii_digit());
        // Sizes such as "512MB" are not codes: a code's last three are digits or capitals
        // with a digit among all five, and no code ends in "MB"/"GB"/"KB".
        let size = ["KB", "MB", "GB", "TB"]
            .iter()
            .any(|u| candidate.ends_with(u));
        if shaped && is_class && has_digit && !size {
            found.push(candidate.to_string());
        }
    }
    found
}

#[test]
fn sqlstates_are_spelled_in_the_error_module_only() {
    let mut offenders = Vec::new();
    for (path, code) in sources() {
        if under(&path, "error") {
            continue;
        }
        for literal in sqlstate_literals(&code) {
            offenders.push(format!("{}: \"{literal}\"", path.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "SQLSTATE codes outside src/error/ (add a typed variant to Error instead): {offenders:#?}"
    );
}

#[test]
fn the_check_finds_a_sqlstate_and_passes_over_sizes() {
    assert_eq!(
        sqlstate_literals(r#"code("53000") "XX000""#),
        ["53000", "XX000"]
    );
    assert!(sqlstate_literals(r#""512MB" "QUOTE" "hello""#).is_empty());
}

#[test]
fn only_config_reads_the_environment() {
    let mut offenders = Vec::new();
    for (path, code) in sources() {
        if under(&path, "config") {
            continue;
        }
        for pattern in ["env::var(", "env::var_os(", "env::vars("] {
            if code.contains(pattern) {
                offenders.push(format!("{}: {pattern}", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "environment reads outside src/config/: {offenders:#?}"
    );
}

#[test]
fn the_error_module_is_the_ground_floor() {
    // error/ imports nothing of the crate but itself and the leaf `types` (engine type
    // names in PostgreSQL's words).
    let mut offenders = Vec::new();
    for (path, code) in sources() {
        if !under(&path, "error") {
            continue;
        }
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let module: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if module != "error" && module != "types" {
                offenders.push(format!("{}: crate::{module}", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "error/ imports a higher module: {offenders:#?}"
    );
}

#[test]
fn unsafe_code_lives_in_the_memory_module_only() {
    let mut offenders = Vec::new();
    for (path, code) in sources() {
        if path == Path::new("src/server/memory.rs") {
            continue;
        }
        if code.contains("unsafe ")
            || code.contains("unsafe(")
            || code.contains("allow(unsafe_code)")
        {
            offenders.push(path.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe code outside src/server/memory.rs: {offenders:#?}"
    );
}

/// The layers of ARCHITECTURE.md, lowest first: a top-level module may import only
/// modules of a lower layer (never one of its own layer or above).
const LAYERS: &[&[&str]] = &[
    &[
        "types",
        "time_zone",
        "operators",
        "aggregates",
        "percentiles",
        "cli",
    ],
    &["error"],
    &["telemetry", "model", "temp"],
    &["config", "import", "demo"],
    &["session", "sources"],
    &["sql"],
    &["bind"],
    &["access", "catalog"],
    &["rewrite"],
    &["engine"],
    &["server"],
    &["wire", "http"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn imports_run_down_the_layers_only() {
    let mut offenders = Vec::new();
    for (path, code) in sources() {
        let Some(top) = path
            .strip_prefix("src")
            .ok()
            .and_then(|p| p.components().next())
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
        else {
            continue;
        };
        if matches!(top.as_str(), "lib" | "main") {
            continue;
        }
        let Some(own) = layer(&top) else {
            offenders.push(format!("{}: module {top} is in no layer", path.display()));
            continue;
        };
        for (i, _) in code.match_indices("crate::") {
            let module: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if module == top {
                continue;
            }
            match layer(&module) {
                Some(l) if l < own => {}
                _ => offenders.push(format!("{}: {top} imports {module}", path.display())),
            }
        }
    }
    offenders.sort();
    offenders.dedup();
    assert!(
        offenders.is_empty(),
        "imports that do not run down the layers of ARCHITECTURE.md: {offenders:#?}"
    );
}
