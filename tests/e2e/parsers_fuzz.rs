//! The parsers of outside input never panic: the fuzz targets' seeds (fuzz/, see
//! docs/fuzzing.md) and a few thousand pseudo-random mutations of them go through the WhatsApp
//! webhook parser, the call-ended parser and the workflow loader, each of which must answer
//! `Ok` or `Err`. The long run is `cargo +nightly fuzz run`; this is its short, stable cousin.
//! `HERALD_PARSER_MUTATIONS` (default 3000) and `HERALD_PARSER_SEED` change the run.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dirs` (relative to the repository) whose names end with one of `exts`.
fn seeds(dirs: &[&str], exts: &[&str]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| exts.iter().any(|ext| p.to_string_lossy().ends_with(ext)))
            .collect();
        paths.sort();
        out.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
    }
    assert!(!out.is_empty(), "no seeds in {dirs:?}");
    out
}

/// xorshift64*: the same mutations for the same seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Pieces that parsers of JSON and YAML find hard.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "0",
    "1e309",
    "-0.0",
    "18446744073709551616",
    "\\u0000",
    "\\ud800",
    "\u{feff}",
    "é",
    "💥",
    "\n",
    "\t",
    "  ",
    "- ",
    ": ",
    "&a",
    "*a",
    "!!binary",
    "---",
    "{{",
    "}}",
    "{%",
    "%}",
    "'",
    "#",
    "9000000000000000000ms",
    "((((((((",
    "))))))))",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + rng.below(64)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => out.truncate(at),
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

/// Inputs no seed leads to by small steps: deep nesting, huge numbers, empty and binary.
fn adversarial() -> Vec<Vec<u8>> {
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    vec![
        Vec::new(),
        vec![0; 64],
        vec![0xff; 64],
        deep("[", "]", 100_000).into_bytes(),
        deep("{\"a\":", "}", 50_000).into_bytes(),
        format!("{}x", "- ".repeat(20_000)).into_bytes(),
        deep("[", "]", 20_000).into_bytes(),
        format!("{}1{}", "{a: ".repeat(5_000), "}".repeat(5_000)).into_bytes(),
        b"{\"entry\": [{\"changes\": [{\"value\": {\"messages\": [{\"timestamp\": \"99999999999999999999\"}]}}]}]}".to_vec(),
        b"{\"call_id\": 1e400, \"customer_phone\": 1e400}".to_vec(),
    ]
}

/// Runs `parse` on every seed, the adversarial inputs and `HERALD_PARSER_MUTATIONS` mutations;
/// panics naming the first input that made `parse` panic.
fn never_panics(name: &str, seeds: Vec<Vec<u8>>, parse: impl Fn(&[u8])) {
    let count: usize = std::env::var("HERALD_PARSER_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("HERALD_PARSER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_4e2a_1d00_0001);
    let mut rng = Rng(seed | 1);
    let mut inputs: Vec<Vec<u8>> = seeds.clone();
    inputs.extend(adversarial());
    inputs.extend((0..count).map(|_| {
        let seed = &seeds[rng.below(seeds.len())];
        mutate(&mut rng, seed)
    }));
    let mut tried = 0;
    let mut failure = None;
    for input in &inputs {
        tried += 1;
        if catch_unwind(AssertUnwindSafe(|| parse(input))).is_err() {
            failure = Some(input.clone());
            break;
        }
    }
    if let Some(input) = failure {
        let shown = String::from_utf8_lossy(&input[..input.len().min(2000)]).into_owned();
        panic!(
            "{name} panicked on input {tried} ({} bytes): {shown:?}",
            input.len()
        );
    }
    assert_eq!(tried, inputs.len());
}

#[test]
fn the_whatsapp_webhook_parser_never_panics() {
    never_panics(
        "ingress::payload::parse",
        seeds(&["tests/fixtures/whatsapp"], &[".json"]),
        |body| {
            let _ = herald::ingress::payload::parse(body);
        },
    );
}

#[test]
fn the_call_ended_parser_never_panics() {
    never_panics(
        "ingress::calls::CallEnded::parse",
        seeds(&["fuzz/corpus/call_ended"], &[".json"]),
        |body| {
            let _ = herald::ingress::calls::CallEnded::parse(body);
        },
    );
}

#[test]
fn the_workflow_loader_never_panics() {
    never_panics(
        "workflow::parse_workflow",
        seeds(&["workflows", "tests/workflows/broken"], &[".yaml"]),
        |text| {
            let text = String::from_utf8_lossy(text);
            let _ = herald::workflow::parse_workflow(Path::new("fuzz.yaml"), &text);
        },
    );
}
