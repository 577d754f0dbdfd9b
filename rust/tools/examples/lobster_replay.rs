//! Replay LOBSTER sample zips and print one JSON line each.
//!
//! `cargo run --release -p bourse-tools --example lobster_replay -- <zip>... [--max N]`

use std::path::Path;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut max = None;
    if let Some(i) = args.iter().position(|a| a == "--max") {
        max = args.get(i + 1).and_then(|n| n.parse().ok());
        args.drain(i..(i + 2).min(args.len()));
    }
    let mut failed = false;
    for path in &args {
        match bourse_tools::lobster::replay_path(Path::new(path), max) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
