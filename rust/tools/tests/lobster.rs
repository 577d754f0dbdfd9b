//! LOBSTER replay against the real sample files (read from `../shared/data/lobster/`
//! next to the repository, never copied into it) and against small hand-made samples.

use std::path::{Path, PathBuf};

use bourse_tools::lobster::{replay_csv, replay_path, replay_zip, ReplayReport};

/// The shared LOBSTER directory, or `None` (with a note) when it is not there.
fn lobster_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("BOURSE_LOBSTER_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/lobster")
    });
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: no LOBSTER data at {}", dir.display());
        None
    }
}

fn sample(dir: &Path, ticker: &str, levels: usize) -> PathBuf {
    dir.join(format!("LOBSTER_SampleFile_{ticker}_2012-06-21_{levels}.zip"))
}

fn assert_clean(r: &ReplayReport) {
    assert_eq!(r.book_mismatches, 0, "mismatches: {:?}", r.first_mismatches);
    assert_eq!(r.rejects, 0, "rejects: {:?}", r.first_rejects);
    assert_eq!(r.executions_short, 0);
    assert!(r.invariants_ok, "{:?}", r.invariant_error);
}

#[test]
fn every_full_sample_replays_with_zero_mismatches() {
    let Some(dir) = lobster_dir() else { return };
    // (ticker, levels, messages, minimum FIFO hit rate on known ids)
    let cases = [
        ("AAPL", 1, 118_497, 0.975),
        ("AMZN", 1, 57_515, 0.975),
        ("AMZN", 5, 155_935, 0.975),
        ("GOOG", 1, 49_482, 0.98),
        ("GOOG", 5, 112_673, 0.995),
        ("GOOG", 10, 147_916, 0.995),
    ];
    for (ticker, levels, messages, min_rate) in cases {
        let r = replay_zip(&sample(&dir, ticker, levels), None).unwrap();
        eprintln!(
            "{ticker}_{levels}: {} messages, {} mismatches, fifo {}/{} known ({:.4}), {:.0} msg/s",
            r.messages,
            r.book_mismatches,
            r.fifo_hits,
            r.executions_known_id,
            r.fifo_hit_rate_known,
            r.messages_per_sec
        );
        assert_eq!(r.ticker, ticker);
        assert_eq!(r.levels, levels);
        assert_eq!(r.messages, messages);
        assert_clean(&r);
        assert_eq!(r.executions, r.executions_known_id + r.executions_unknown_id);
        // Message 0 is seeded, not replayed: it may be one more execution.
        assert!(r.messages_by_type[4] - r.executions <= 1);
        assert!(r.fifo_hit_rate_known >= min_rate, "{ticker}_{levels}: {}", r.fifo_hit_rate_known);
    }
}

#[test]
fn replay_path_returns_one_json_line_and_honours_max_messages() {
    let Some(dir) = lobster_dir() else { return };
    let line = replay_path(&sample(&dir, "GOOG", 10), Some(5_000)).unwrap();
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for field in ["messages", "book_mismatches", "fifo_hits", "executions", "synthetic_orders"] {
        assert!(v[field].is_u64(), "missing {field} in {line}");
    }
    assert_eq!(v["messages"], 5_000);
    assert_eq!(v["book_mismatches"], 0);
    assert!(v["messages_per_sec"].as_f64().unwrap() > 0.0);
}

/// Rows are `askP1,askS1,bidP1,bidS1,...`; empty levels use LOBSTER's dummies.
fn row(levels: &[(u64, u64, u64, u64)], depth: usize) -> String {
    let mut fields = Vec::new();
    for i in 0..depth {
        match levels.get(i) {
            Some(&(ap, az, bp, bz)) => {
                let ask = if az == 0 { "9999999999,0".to_string() } else { format!("{ap},{az}") };
                let bid = if bz == 0 { "-9999999999,0".to_string() } else { format!("{bp},{bz}") };
                fields.push(format!("{ask},{bid}"));
            }
            None => fields.push("9999999999,0,-9999999999,0".into()),
        }
    }
    fields.join(",")
}

#[test]
fn seeds_from_row_zero_and_handles_unknown_ids_and_levels_entering_the_view() {
    // One level per side. Message 0 adds order 10 behind 100 unknown shares at 1000.
    let messages = [
        "1.0,1,10,50,10000,1", // 0: bid 10000 becomes 150 (100 seeded + our 50)
        "1.1,1,11,30,10100,1", // 1: new best bid 10100 x30; 10000 leaves the view
        "1.2,4,11,30,10100,1", // 2: execution of 11 (FIFO hit); 10000 x150 re-enters
        "1.3,3,99,40,10000,1", // 3: unknown id deletes 40 of the seeded quantity
        "1.4,4,98,60,10000,1", // 4: unknown id executed: hits the seeded quantity
        "1.5,4,10,50,10000,1", // 5: order 10 executed: FIFO hit; level 9900 x20 enters
        "1.6,5,0,7,9950,-1",   // 6: hidden execution: nothing changes
        "1.7,2,77,5,20000,-1", // 7: unknown id partially cancelled on the ask
    ];
    let rows = [
        row(&[(20000, 100, 10000, 150)], 1),
        row(&[(20000, 100, 10100, 30)], 1),
        row(&[(20000, 100, 10000, 150)], 1),
        row(&[(20000, 100, 10000, 110)], 1),
        row(&[(20000, 100, 10000, 50)], 1),
        row(&[(20000, 100, 9900, 20)], 1),
        row(&[(20000, 100, 9900, 20)], 1),
        row(&[(20000, 95, 9900, 20)], 1),
    ];
    let r = replay_csv(&messages.join("\n"), &rows.join("\n"), 1, None).unwrap();
    assert_clean(&r);
    assert_eq!(r.messages, 8);
    assert_eq!(r.executions, 3);
    assert_eq!(r.fifo_hits, 2);
    assert_eq!(r.executions_unknown_id, 1);
    assert_eq!(r.synthetic_hits, 1);
    assert_eq!(r.seed_orders, 2, "ask 20000 and the unknown part of bid 10000");
    assert_eq!(r.synthetic_orders, 3, "plus bid 9900 entering the view");
    assert_eq!(r.unknown_id_reductions, 2);
    assert_eq!(r.messages_by_type[5], 1);
}

#[test]
fn a_stale_level_is_dropped_and_a_wrong_row_is_a_mismatch() {
    let messages = [
        "1.0,1,1,10,10000,1", // 0: bid 10000 x10 (ours)
        "1.1,1,2,10,10100,1", // 1: bid 10100 x10; 10000 leaves the view
        "1.2,3,2,10,10100,1", // 2: 10100 deleted; meanwhile 10000 was cancelled unseen
        "1.3,1,3,5,10050,1",  // 3: the file's row is wrong on purpose
    ];
    let rows = [
        row(&[(0, 0, 10000, 10)], 1),
        row(&[(0, 0, 10100, 10)], 1),
        row(&[(0, 0, 9000, 7)], 1),
        row(&[(0, 0, 10050, 6)], 1),
    ];
    let r = replay_csv(&messages.join("\n"), &rows.join("\n"), 1, None).unwrap();
    assert_eq!(r.stale_levels_dropped, 1);
    assert_eq!(r.book_mismatches, 1);
    assert_eq!(r.first_mismatches[0].index, 3);
    assert_eq!(r.first_mismatches[0].engine.bids, vec![(10050, 5)]);
}
