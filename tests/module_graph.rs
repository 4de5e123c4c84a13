//! Imports run one way: `src/lib.rs` declares the top-level modules bottom-up, and a module may
//! name (`crate::x`) only modules declared before it. That order is a topological order of the
//! import graph, so this also keeps the graph free of cycles. Unit tests
//! (`#[cfg(test)] mod tests { ... }` at the end of a file) may look anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The top-level modules in the order `src/lib.rs` declares them.
fn declared_order(src: &Path) -> Vec<String> {
    fs::read_to_string(src.join("lib.rs"))
        .expect("read src/lib.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segments after every `crate::` in `text`, including each item of a
/// `crate::{a::X, b}` group.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `$crate::` or `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth 1 of the group: the identifier that starts each one.
            let (mut depth, mut start_of_item) = (1usize, true);
            let mut chars = group.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start_of_item = true,
                    c if start_of_item && depth == 1 && is_ident(c) => {
                        let end = group[i..]
                            .find(|c| !is_ident(c))
                            .map_or(group.len(), |n| i + n);
                        found.insert(group[i..end].to_string());
                        start_of_item = false;
                        while chars.peek().is_some_and(|&(j, _)| j < end) {
                            chars.next();
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let end = rest.find(|c| !is_ident(c)).unwrap_or(rest.len());
            found.insert(rest[..end].to_string());
        }
    }
    found
}

#[test]
fn every_module_imports_only_modules_declared_before_it_in_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = declared_order(&src);
    assert!(
        order.len() > 10,
        "read the module list from src/lib.rs: {order:?}"
    );
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let me = top.trim_end_matches(".rs");
        let Some(&my_rank) = rank.get(me) else {
            continue; // lib.rs, main.rs
        };
        let text = fs::read_to_string(&file).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        for used in crate_paths(text) {
            if let Some(&their_rank) = rank.get(used.as_str())
                && their_rank > my_rank
            {
                wrong.push(format!(
                    "{} uses crate::{used}, declared after {me} in src/lib.rs",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports must run one way (a lower module never imports a higher one):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_path_reader_sees_plain_paths_groups_and_nested_groups() {
    let text = "use crate::{\n    domain::{A, B},\n    expr::Text,\n    self,\n};\nlet x = crate::bus::Bus::new();\n$crate::skip::me; notcrate::x";
    let found: Vec<_> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["bus", "domain", "expr", "self"]);
}
