//! The load generator against a real node and gateway: a short, low-rate run is fully
//! answered, trades happen, and the latency percentiles are ordered.

use bourse_gateway::loadgen::{bench_gateway, GatewayBenchConfig};
use bourse_node::Durability;

/// The single spinning client thread (pinned to the first core, which every machine has)
/// answers the same schedule as the sender/receiver pairs.
#[test]
fn a_spinning_client_thread_is_fully_answered_too() {
    let report = bench_gateway(GatewayBenchConfig {
        rate: 2_000,
        duration_s: 0.5,
        warmup_s: 0.1,
        sessions: 3,
        policy: Durability::Write,
        seed: 12,
        client_spin_core: Some(0),
        ..GatewayBenchConfig::default()
    })
    .expect("bench runs");
    let l = &report.load;
    assert_eq!(l.client_threads, 1);
    assert!((1_100..=1_201).contains(&l.sent), "sent {}", l.sent);
    assert_eq!(l.answered, l.sent, "{l:?}");
    assert_eq!((l.unanswered, l.not_sent, l.disconnects, l.unmatched), (0, 0, 0, 0), "{l:?}");
    assert!(l.measured > 0 && l.p50_us > 0.0 && l.p50_us <= l.p99_us, "{l:?}");
    assert_eq!(report.gateway.submitted, l.sent);
}

#[test]
fn a_short_run_is_fully_answered_and_trades() {
    let report = bench_gateway(GatewayBenchConfig {
        rate: 2_000,
        duration_s: 1.0,
        warmup_s: 0.2,
        sessions: 4,
        policy: Durability::Write,
        seed: 11,
        ..GatewayBenchConfig::default()
    })
    .expect("bench runs");
    eprintln!("{}", serde_json::to_string(&report).expect("json"));
    let l = &report.load;
    assert_eq!(report.bench, "gateway");
    assert_eq!(report.policy, "write");
    assert_eq!(l.sessions, 4);
    // 1.2 s at 2,000/s, give or take the schedule's last slot.
    assert!((2_300..=2_401).contains(&l.sent), "sent {}", l.sent);
    assert_eq!(l.answered, l.sent, "{l:?}");
    assert_eq!(l.unanswered, 0);
    assert_eq!(l.not_sent, 0);
    assert_eq!(l.disconnects, 0, "{:?}", l.disconnect_reasons);
    assert_eq!(l.unmatched, 0);
    assert_eq!(l.session_rejects.throttled + l.session_rejects.busy, 0, "{l:?}");
    assert!(l.trades > 0, "no trades: {l:?}");
    assert!(l.executions >= 2 * l.trades);
    assert!(l.mix.new > 0 && l.mix.cancel > 0 && l.mix.ioc > 0);
    assert!(l.mix.amend_reduce + l.mix.amend_price > 0);
    assert!(l.measured > 0 && l.measured <= l.answered);
    assert!(0.0 < l.p50_us, "{l:?}");
    assert!(l.p50_us <= l.p90_us && l.p90_us <= l.p99_us, "{l:?}");
    assert!(l.p99_us <= l.p999_us && l.p999_us <= l.max_us, "{l:?}");
    assert!(l.achieved_rate > 1_000.0, "{l:?}");
    assert_eq!(report.gateway.logins, 4);
    assert_eq!(report.gateway.protocol_errors, 0);
    assert_eq!(report.gateway.slow_consumers, 0);
    assert_eq!(report.gateway.submitted, l.sent);
    let json = serde_json::to_value(&report).expect("serializes");
    for key in ["offered_rate", "achieved_rate", "p50_us", "p99_us", "p999_us", "max_us", "rejects"]
    {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
}

#[test]
fn bad_configurations_are_refused() {
    let zero = GatewayBenchConfig { rate: 0, ..GatewayBenchConfig::default() };
    assert!(bench_gateway(zero).is_err());
    let none = GatewayBenchConfig { sessions: 0, ..GatewayBenchConfig::default() };
    assert!(bench_gateway(none).is_err());
    let nan = GatewayBenchConfig { duration_s: f64::NAN, ..GatewayBenchConfig::default() };
    assert!(bench_gateway(nan).is_err());
}
