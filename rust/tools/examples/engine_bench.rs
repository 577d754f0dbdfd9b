//! Run an engine benchmark workload and print its JSON line.
//!
//! `cargo run --release -p bourse-tools --example engine_bench -- [workload] [ops] [seed]`
//! (defaults: `exchange-core`, the workload's default op count, seed 1).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map_or("exchange-core", String::as_str);
    let ops = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    match bourse_tools::bench::run(workload, ops, seed) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
