//! Small benchmark runs: the JSON has its fields and the engine stays consistent.

use bourse_tools::bench::{self, build, measure};

#[test]
fn run_returns_the_documented_json_fields() {
    for workload in bench::WORKLOADS {
        let line = bench::run(workload, 20_000, 7).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["workload"], *workload);
        assert_eq!(v["ops"], 20_000);
        for field in ["p50_ns", "p99_ns", "p999_ns", "max_ns", "trades", "rejects"] {
            assert!(v[field].is_u64(), "{workload}: missing {field} in {line}");
        }
        for field in ["ops_per_sec", "mean_ns"] {
            assert!(v[field].as_f64().unwrap() > 0.0, "{workload}: {field}");
        }
        assert!(v["p50_ns"].as_u64() <= v["p99_ns"].as_u64());
        assert!(v["p99_ns"].as_u64() <= v["max_ns"].as_u64());
        assert_eq!(v["deterministic"], true);
        assert!(v["commands"].is_object());
    }
    assert!(bench::run("nope", 10, 1).is_err());
}

#[test]
fn exchange_core_keeps_the_mix_the_book_and_the_invariants() {
    let w = build("exchange-core", 20_000, 3).unwrap();
    let (report, engine) = measure(&w).unwrap();
    engine.check_invariants().unwrap();
    assert_eq!(report.rejects, 0, "{:?}", report.reject_reasons);
    assert!(report.trades > 0);
    let share = |k: &str| *report.commands.get(k).unwrap_or(&0) as f64 / 20_000.0;
    let amends = share("amend_price") + share("amend_price_qty");
    assert!((share("place_gtc") - 0.09).abs() < 0.02, "{:?}", report.commands);
    assert!((share("place_ioc") - 0.03).abs() < 0.01, "{:?}", report.commands);
    assert!((share("cancel") - 0.06).abs() < 0.02, "{:?}", report.commands);
    assert!((amends - 0.82).abs() < 0.02, "{:?}", report.commands);
    assert!((700..=1300).contains(&report.open_orders), "{}", report.open_orders);
}

#[test]
fn liquibook_inserts_only_and_trades_about_half() {
    let w = build("liquibook", 20_000, 5).unwrap();
    let (report, engine) = measure(&w).unwrap();
    engine.check_invariants().unwrap();
    assert_eq!(report.rejects, 0, "{:?}", report.reject_reasons);
    assert_eq!(report.commands.get("place_gtc"), Some(&20_000));
    assert!(report.trades > 5_000, "{}", report.trades);
}

#[test]
fn workloads_are_deterministic_in_the_seed() {
    let a = build("exchange-core", 5_000, 11).unwrap();
    let b = build("exchange-core", 5_000, 11).unwrap();
    let c = build("exchange-core", 5_000, 12).unwrap();
    assert_eq!(a.commands, b.commands);
    assert_ne!(a.commands, c.commands);
    assert_eq!(a.engine().unwrap().state_hash(), b.engine().unwrap().state_hash());
}
