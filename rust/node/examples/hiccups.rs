//! How often this machine takes the CPU away from a thread that never sleeps.
//!
//! A latency benchmark's tail on a virtual machine is bounded below by the time the
//! hypervisor or the kernel takes the vCPU away from a spinning thread: while the thread is
//! off the CPU nothing it owns makes progress. If a spinning thread with nothing else to do
//! loses X% of wall time in gaps over 250 µs, then roughly X% of requests served by a
//! spinning thread on that core wait more than 250 µs, whatever the server does. This meter
//! measures that floor.
//!
//! One thread per core (default: every core the process may use), each pinned to its core,
//! reads `Instant::now()` back to back for the whole run. The gap between two consecutive
//! reads is the time the thread was not running (plus the cost of one read, tens of
//! nanoseconds with a vDSO clock). Gaps over 1 µs go into an HdrHistogram in nanoseconds and
//! into exact per-threshold counters (count and total time); shorter gaps are only counted.
//! The loop does not allocate. Per core the meter reports the gaps over 10 µs, 50 µs, 100 µs,
//! 250 µs, 1 ms and 5 ms (count, and the share of wall time spent inside them), the p99,
//! p99.9 and largest of the gaps over 1 µs, and the guest kernel's own accounting for the
//! same interval: the CPU's "steal" jiffies from `/proc/stat` (time the hypervisor reports
//! it ran something else; jiffies of `USER_HZ`, 100 per second on Linux) and the thread's
//! involuntary context switches from `/proc/thread-self/status` (times the guest kernel
//! preempted it for another task). Gaps with neither behind them were taken by the
//! hypervisor without telling the guest, or by interrupts. Both are `null` where the files
//! are missing.
//!
//! Every measured core is kept busy, so anything else that needs those cores during the run
//! (including the kernel's own threads) shows up as gaps: run it on an otherwise idle
//! machine. A human-readable table goes to stderr and one JSON line to stdout.
//!
//! ```sh
//! cargo run --release -p bourse-node --example hiccups [-- --seconds 10 --cores 0,1]
//! ```

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Gap thresholds reported, in nanoseconds, with their names in the JSON keys.
const THRESHOLDS: [(u64, &str); 6] = [
    (10_000, "10us"),
    (50_000, "50us"),
    (100_000, "100us"),
    (250_000, "250us"),
    (1_000_000, "1ms"),
    (5_000_000, "5ms"),
];

/// Gaps up to this many nanoseconds are counted but not recorded.
const RECORD_OVER_NS: u64 = 1_000;

/// What one core's spinning thread saw.
struct CoreReport {
    core: usize,
    /// Gaps measured (consecutive pairs of clock reads).
    samples: u64,
    /// Wall time from the first read to the last, in nanoseconds.
    elapsed_ns: u64,
    /// Per threshold: how many gaps exceeded it.
    counts: [u64; THRESHOLDS.len()],
    /// Per threshold: total nanoseconds spent in gaps exceeding it.
    totals_ns: [u64; THRESHOLDS.len()],
    /// Every gap over 1 µs, in nanoseconds.
    histogram: Histogram<u64>,
    /// The largest gap, exact, in nanoseconds.
    max_ns: u64,
    /// Steal jiffies the kernel accounted to this CPU over the run, when known.
    steal_jiffies: Option<u64>,
    /// Times the guest kernel preempted the thread during the run, when known.
    involuntary_switches: Option<u64>,
}

fn main() {
    let (seconds, cores) = match parse_args() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("hiccups: {e}");
            eprintln!("usage: hiccups [--seconds S] [--cores 0,1,...]");
            std::process::exit(2);
        }
    };
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
    eprintln!("hiccups: {seconds} s on cores {cores:?}, clocksource {clocksource}");

    let duration = Duration::from_secs_f64(seconds);
    let barrier = Arc::new(Barrier::new(cores.len() + 1));
    let threads: Vec<_> = cores
        .iter()
        .map(|&core| {
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .name(format!("hiccups-{core}"))
                .spawn(move || {
                    let pinned = bourse_node::affinity::pin_current_thread(Some(core));
                    // Wait even when pinning failed, so the others are not left at the barrier.
                    barrier.wait();
                    pinned.map(|()| spin(core, duration))
                })
                .expect("spawn a spinning thread")
        })
        .collect();

    let steal_before = read_steal();
    barrier.wait();
    let mut reports = Vec::with_capacity(threads.len());
    for thread in threads {
        match thread.join().expect("a spinning thread panicked") {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("hiccups: {e}");
                std::process::exit(1);
            }
        }
    }
    let steal_after = read_steal();
    for report in &mut reports {
        report.steal_jiffies = match (&steal_before, &steal_after) {
            (Some(before), Some(after)) => after
                .get(&report.core)
                .zip(before.get(&report.core))
                .map(|(a, b)| a.saturating_sub(*b)),
            _ => None,
        };
    }

    print_table(&reports);
    println!("{}", json_line(seconds, &reports));
}

/// Parses `--seconds S` (default 10) and `--cores 0,1` (default: every allowed core).
fn parse_args() -> Result<(f64, Vec<usize>), String> {
    let mut seconds = 10.0;
    let mut cores = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                let v = value()?;
                seconds = v.parse().map_err(|_| format!("--seconds {v}: not a number"))?;
                if !(seconds > 0.0 && seconds <= 3600.0) {
                    return Err(format!("--seconds {v}: must be in (0, 3600]"));
                }
            }
            "--cores" => {
                let v = value()?;
                let list = v
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("--cores {v}: expected a list like 0,1"))?;
                cores = Some(list);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let cores = match cores {
        Some(list) => list,
        None => core_affinity::get_core_ids()
            .ok_or("the cores this process may use cannot be listed")?
            .into_iter()
            .map(|id| id.id)
            .collect(),
    };
    if cores.is_empty() {
        return Err("no cores to measure".to_string());
    }
    let mut sorted = cores.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cores.len() {
        return Err(format!("--cores {cores:?}: each core at most once"));
    }
    Ok((seconds, cores))
}

/// Reads the clock back to back on the calling (already pinned) thread for `duration`.
fn spin(core: usize, duration: Duration) -> CoreReport {
    // Bounded, so recording never resizes (allocates) inside the loop; longer gaps saturate.
    let mut histogram =
        Histogram::<u64>::new_with_bounds(RECORD_OVER_NS, 3_600_000_000_000, 3).expect("bounds");
    let mut counts = [0u64; THRESHOLDS.len()];
    let mut totals_ns = [0u64; THRESHOLDS.len()];
    let mut max_ns = 0u64;
    let mut samples = 0u64;
    let switches_before = involuntary_switches();
    let start = Instant::now();
    let deadline = start + duration;
    let mut prev = start;
    loop {
        let now = Instant::now();
        let gap = now.duration_since(prev).as_nanos() as u64;
        prev = now;
        samples += 1;
        if gap > RECORD_OVER_NS {
            histogram.saturating_record(gap);
            max_ns = max_ns.max(gap);
            for (i, &(threshold, _)) in THRESHOLDS.iter().enumerate() {
                if gap > threshold {
                    counts[i] += 1;
                    totals_ns[i] += gap;
                }
            }
        }
        if now >= deadline {
            break;
        }
    }
    let elapsed_ns = prev.duration_since(start).as_nanos() as u64;
    let switches = involuntary_switches()
        .zip(switches_before)
        .map(|(after, before)| after.saturating_sub(before));
    CoreReport {
        core,
        samples,
        elapsed_ns,
        counts,
        totals_ns,
        histogram,
        max_ns,
        steal_jiffies: None,
        involuntary_switches: switches,
    }
}

/// The calling thread's involuntary context switches so far, from
/// `/proc/thread-self/status`, or `None` where that is missing.
fn involuntary_switches() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Per-CPU steal jiffies from `/proc/stat` (the eighth number on each `cpuN` line), or
/// `None` where the file is missing or unreadable.
fn read_steal() -> Option<std::collections::HashMap<usize, u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut steal = std::collections::HashMap::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields.next().and_then(|name| name.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(cpu) = cpu.parse::<usize>() else {
            continue; // The aggregate "cpu" line.
        };
        if let Some(value) = fields.nth(7).and_then(|v| v.parse().ok()) {
            steal.insert(cpu, value);
        }
    }
    Some(steal)
}

impl CoreReport {
    /// The gap at quantile `q` of the gaps over 1 µs, in nanoseconds: the histogram's value,
    /// which may round up past the largest gap, capped at the exact largest gap.
    fn quantile_ns(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q).min(self.max_ns)
    }
}

fn pct(part_ns: u64, whole_ns: u64) -> f64 {
    if whole_ns == 0 {
        0.0
    } else {
        part_ns as f64 * 100.0 / whole_ns as f64
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn print_table(reports: &[CoreReport]) {
    let mut out = format!("{:<18}", "");
    for r in reports {
        out += &format!("{:>24}", format!("core {}", r.core));
    }
    out.push('\n');
    let mut row = |label: &str, cell: &dyn Fn(&CoreReport) -> String| {
        out += &format!("{label:<18}");
        for r in reports {
            out += &format!("{:>24}", cell(r));
        }
        out.push('\n');
    };
    row("samples", &|r| r.samples.to_string());
    row("ns per read", &|r| format!("{:.1}", r.elapsed_ns as f64 / r.samples.max(1) as f64));
    for (i, &(_, name)) in THRESHOLDS.iter().enumerate() {
        row(&format!("gaps > {}", name.replace("us", " µs").replace("ms", " ms")), &|r| {
            format!("{} ({:.3}%)", r.counts[i], pct(r.totals_ns[i], r.elapsed_ns))
        });
    }
    row("gaps > 1 µs", &|r| r.histogram.len().to_string());
    row("  p99 µs", &|r| format!("{:.1}", us(r.quantile_ns(0.99))));
    row("  p99.9 µs", &|r| format!("{:.1}", us(r.quantile_ns(0.999))));
    row("  max µs", &|r| format!("{:.1}", us(r.max_ns)));
    row("steal jiffies", &|r| r.steal_jiffies.map_or("n/a".to_string(), |s| s.to_string()));
    row("preempted", &|r| r.involuntary_switches.map_or("n/a".to_string(), |s| s.to_string()));
    eprint!("{out}");
}

fn json_line(seconds: f64, reports: &[CoreReport]) -> String {
    let cores: Vec<String> = reports
        .iter()
        .map(|r| {
            let mut fields =
                vec![format!("\"core\":{}", r.core), format!("\"samples\":{}", r.samples)];
            for (i, &(_, name)) in THRESHOLDS.iter().enumerate() {
                fields.push(format!("\"gaps_over_{name}\":{}", r.counts[i]));
                fields.push(format!(
                    "\"time_in_gaps_over_{name}_pct\":{:.4}",
                    pct(r.totals_ns[i], r.elapsed_ns)
                ));
            }
            fields.push(format!("\"gaps_over_1us\":{}", r.histogram.len()));
            fields.push(format!("\"p99_gap_us\":{:.1}", us(r.quantile_ns(0.99))));
            fields.push(format!("\"p999_gap_us\":{:.1}", us(r.quantile_ns(0.999))));
            fields.push(format!("\"max_gap_us\":{:.1}", us(r.max_ns)));
            fields.push(format!(
                "\"steal_jiffies\":{}",
                r.steal_jiffies.map_or("null".to_string(), |s| s.to_string())
            ));
            fields.push(format!(
                "\"involuntary_switches\":{}",
                r.involuntary_switches.map_or("null".to_string(), |s| s.to_string())
            ));
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!("{{\"bench\":\"hiccups\",\"seconds\":{seconds},\"cores\":[{}]}}", cores.join(","))
}
