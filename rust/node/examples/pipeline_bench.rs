//! Run `bench pipeline` or `bench replay` from cargo and print the JSON line.
//!
//! `cargo run --release -p bourse-node --example pipeline_bench -- pipeline fsync 200000 256`
//! `cargo run --release -p bourse-node --example pipeline_bench -- replay 2000000`

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let result = match arg(0, "pipeline").as_str() {
        "pipeline" => {
            let policy = arg(1, "fsync").parse().expect("policy: fsync, write or none");
            bourse_node::bench::pipeline(
                policy,
                arg(2, "200000").parse().expect("ops"),
                arg(3, "256").parse().expect("window"),
                1,
            )
        }
        "replay" => bourse_node::bench::replay(arg(1, "2000000").parse().expect("ops"), 1, 2000),
        other => Err(format!("unknown bench {other}")),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
