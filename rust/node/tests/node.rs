//! The node end to end, in process: submit, acknowledge, stop, recover, read events.

use std::sync::Arc;
use std::time::Duration;

use bourse_engine::*;
use bourse_node::{Durability, Node, NodeConfig, Pipeline, WaitStrategy};

const T: Duration = Duration::from_secs(10);

fn config(dir: &std::path::Path, pipeline: Pipeline) -> NodeConfig {
    NodeConfig {
        pipeline,
        data_dir: dir.to_path_buf(),
        durability: Durability::Fsync,
        segment_bytes: 4096,
        // Zero-filled segments (small ones roll often): every test here exercises the spare,
        // its installation, readers stopping at padding and recovery trimming it.
        preallocate_segments: true,
        snapshot_every_commands: 50,
        snapshot_every_secs: 0,
        keep_snapshots: 2,
        ring_capacity: 1024,
        wait: WaitStrategy::SpinThenPark { spins: 100, park_timeout_us: 200 },
        order_capacity: 1024,
        levels_per_side: 64,
        event_window: 20,
        ..NodeConfig::default()
    }
}

fn setup() -> Vec<Command> {
    let mut v = vec![
        Command::ListAsset { asset: AssetId(1), decimals: 8 },
        Command::ListAsset { asset: AssetId(2), decimals: 8 },
        Command::ListMarket {
            market: MarketId(1),
            base: AssetId(1),
            quote: AssetId(2),
            price_decimals: 2,
            tick_size: 1,
            lot_size: 1000,
            min_notional: 0,
        },
    ];
    for a in 1..=2 {
        v.push(Command::CreateAccount { account: AccountId(a), fee_tier: 0 });
        v.push(Command::Deposit { account: AccountId(a), asset: AssetId(1), amount: 1 << 40 });
        v.push(Command::Deposit { account: AccountId(a), asset: AssetId(2), amount: 1 << 50 });
    }
    v
}

fn order(account: u64, side: Side, price: u64, i: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        market: MarketId(1),
        client_order_id: i,
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        stp: StpMode::None,
        price,
        quantity: 1000 * (1 + i % 5),
        quote_quantity: 0,
        reserve_price: 0,
    })
}

fn commands_are_sequenced_acknowledged_and_survive_a_restart(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut direct = Engine::default();
    let mut sink = Vec::new();
    let hash;
    {
        let node = Node::start(config(dir.path(), p)).unwrap();
        assert_eq!(node.recovery().next_seq, 1);
        let mut client = node.client().unwrap();
        let mut seq = 0;
        for (i, cmd) in setup()
            .into_iter()
            .chain((0..200).map(|i| {
                let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
                order(1 + i % 2, side, 10_000 + (i * 7) % 40, i + 1)
            }))
            .enumerate()
        {
            let ack = client.call(cmd, T).unwrap();
            seq += 1;
            assert_eq!(ack.seq, seq, "command {i} got the next sequence number");
            sink.clear();
            direct.apply(&cmd, &mut sink);
            assert_eq!(ack.events, sink, "the node's engine did what a direct engine does");
        }
        hash = node.query(|e| e.state_hash()).unwrap();
        assert_eq!(hash, direct.state_hash());
        let stats = node.stats();
        assert_eq!(stats.durable_seq, seq);
        assert!(stats.snapshots >= 1, "snapshots were taken: {stats:?}");
        // Events can be read from any sequence number: the window and from the journal.
        let recent = node.events_from(seq - 5, 100, T).unwrap();
        assert_eq!(
            recent.iter().map(|c| c.seq).collect::<Vec<_>>(),
            (seq - 5..=seq).collect::<Vec<_>>()
        );
        let old = node.events_from(1, 3, T).unwrap_err();
        assert!(old.to_string().contains("no longer available"), "{old}");
        // Older than the 20 kept in memory, newer than the oldest snapshot kept: re-derived.
        let from_journal = node.events_from(seq - 45, 10, T).unwrap();
        assert_eq!(
            from_journal.iter().map(|c| c.seq).collect::<Vec<_>>(),
            (seq - 45..seq - 35).collect::<Vec<_>>()
        );
        let mut check = Engine::default();
        let mut all = Vec::new();
        for cmd in setup().into_iter().chain((0..200).map(|i| {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            order(1 + i % 2, side, 10_000 + (i * 7) % 40, i + 1)
        })) {
            let mut ev = Vec::new();
            check.apply(&cmd, &mut ev);
            all.push(ev);
        }
        for c in &from_journal {
            assert_eq!(c.events, all[(c.seq - 1) as usize], "re-derived events of seq {}", c.seq);
        }
        node.stop().unwrap();
    }
    let node = Node::start(config(dir.path(), p)).unwrap();
    let r = node.recovery().clone();
    assert_eq!(r.next_seq, 210);
    assert_eq!(r.state_hash, format!("{hash:032x}"));
    assert!(r.snapshot_seq > 0);
    let mut client = node.client().unwrap();
    let ack = client.call(order(1, Side::Buy, 9_000, 999), T).unwrap();
    assert_eq!(ack.seq, 210, "the sequence continues without a gap");
    node.stop().unwrap();
}

fn a_full_submission_ring_is_explicit_back_pressure(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), p);
    cfg.ring_capacity = 4;
    cfg.durability = Durability::None;
    let node = Node::start(cfg).unwrap();
    let mut client = node.client().unwrap();
    let mut busy = 0;
    for i in 0..10_000u64 {
        match client.submit(Command::ListAsset { asset: AssetId(i as u32 + 10), decimals: 2 }, i) {
            Ok(()) => {}
            Err(bourse_node::SubmitError::Busy(s)) => {
                assert_eq!(s.correlation, i, "the command comes back");
                busy += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(busy > 0, "a 4-slot ring filled up");
    assert!(node.stats().busy_rejections >= busy);
}

fn snapshot_plus_replay_equals_full_replay_in_state_and_events(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), p);
    cfg.keep_snapshots = 3;
    cfg.durability = Durability::Write;
    let commands: Vec<Command> = setup()
        .into_iter()
        .chain((0..300).map(|i| {
            let side = if i % 3 == 0 { Side::Sell } else { Side::Buy };
            order(1 + i % 2, side, 10_000 + (i * 13) % 30, i + 1)
        }))
        .collect();
    {
        let node = Node::start(cfg.clone()).unwrap();
        let mut client = node.client().unwrap();
        for c in &commands {
            client.call(*c, T).unwrap();
        }
        assert!(node.stats().snapshots >= 3);
        node.stop().unwrap();
    }
    // The reference: the same commands applied directly, from seq 1 (compaction has removed
    // the journal's beginning; what is left must be exactly the tail of those commands).
    let full = |_: ()| {
        let mut e = Engine::default();
        let mut stream = Vec::new();
        for c in &commands {
            let mut ev = Vec::new();
            e.apply(c, &mut ev);
            stream.push(ev);
        }
        (e.state_hash(), stream)
    };
    let retained: Vec<_> =
        bourse_node::journal::read_journal(dir.path(), 0, bourse_node::journal::ReadMode::Strict)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
    let first = retained.first().unwrap().seq;
    assert!(first > 1, "compaction removed the journal's beginning");
    for r in &retained {
        assert_eq!(r.command, commands[(r.seq - 1) as usize]);
    }
    let (h1, s1) = full(());
    assert_eq!(s1.len(), commands.len());
    // Snapshot + tail replay, twice: the same state as the full reference, both times.
    let (engine, report) = bourse_node::recovery::replay_directory(&cfg).unwrap();
    let (again, _) = bourse_node::recovery::replay_directory(&cfg).unwrap();
    assert!(report.snapshot_seq > 0, "started from a snapshot");
    assert_eq!(engine.state_hash(), h1);
    assert_eq!(again.state_hash(), h1);
    // Events re-derived from the snapshots kept (at 250, 300 and the final one) equal the
    // reference's, for every seq after them.
    for from in [251u64, 270, 301, 305] {
        let derived =
            bourse_node::recovery::replay_events(&cfg, from, 25, commands.len() as u64).unwrap();
        assert_eq!(derived.first().map(|c| c.seq), Some(from));
        for c in derived {
            assert_eq!(c.events, s1[(c.seq - 1) as usize], "events of seq {}", c.seq);
        }
    }
}

fn a_client_that_never_reads_its_acks_stalls_nobody(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), p);
    cfg.ring_capacity = 8;
    cfg.durability = Durability::None;
    cfg.event_window = 1000;
    let node = Node::start(cfg).unwrap();
    let mut slow = node.client().unwrap();
    let mut fast = node.client().unwrap();
    let mut sent = 0u64;
    while sent < 200 {
        let cmd = Command::ListAsset { asset: AssetId(1000 + sent as u32), decimals: 2 };
        match slow.submit(cmd, sent) {
            Ok(()) => sent += 1,
            Err(bourse_node::SubmitError::Busy(_)) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    // The slow client's 8-slot ack ring overflowed; everyone else carries on.
    for i in 0..50 {
        let ack =
            fast.call(Command::ListAsset { asset: AssetId(5000 + i), decimals: 2 }, T).unwrap();
        assert!(matches!(ack.events[0], Event::AssetListed { .. }));
    }
    assert!(slow.acks_lost(), "the slow client is told it lost acknowledgements");
    assert!(node.stats().acks_dropped > 0);
    // Nothing was lost from the event stream.
    let all = node.events_from(1, 1000, T).unwrap();
    assert_eq!(all.len(), 250);
}

fn a_new_client_always_gets_its_first_acknowledgement(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), p);
    cfg.durability = Durability::None;
    cfg.wait = WaitStrategy::BusySpin;
    cfg.snapshot_every_commands = 0;
    let node = Node::start(cfg).unwrap();
    for i in 0..200u32 {
        let mut client = node.client().unwrap();
        let ack = client.call(Command::ListAsset { asset: AssetId(10 + i), decimals: 2 }, T);
        assert!(ack.is_ok(), "client {i}: {:?}", ack.err());
    }
    assert_eq!(node.stats().acks_dropped, 0);
}

fn a_panicking_thread_stops_the_node_instead_of_hanging_it(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), p)).unwrap();
    // The engine runs on its own thread, or on the one pipeline thread.
    let thread = match p {
        Pipeline::Threads => "bourse-engine",
        Pipeline::Single => "bourse-pipeline",
    };
    let result = node.query(|_| -> u64 { panic!("deliberate panic in a query") });
    assert!(result.is_err());
    let started = std::time::Instant::now();
    let stopped = node.stop();
    assert!(
        matches!(stopped, Err(bourse_node::NodeError::ThreadPanicked(ref t)) if t.contains(thread)),
        "{stopped:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn the_final_snapshot_covers_everything_submitted_before_stop(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), p);
    cfg.snapshot_every_commands = 0;
    let node = Node::start(cfg.clone()).unwrap();
    let mut client = node.client().unwrap();
    let commands = setup();
    for (i, c) in commands.iter().enumerate() {
        client.submit(*c, i as u64).unwrap();
    }
    node.stop().unwrap();
    let node = Node::start(cfg).unwrap();
    let r = node.recovery();
    assert_eq!(r.snapshot_seq, commands.len() as u64, "{r:?}");
    assert_eq!(r.replayed, 0);
    assert_eq!(r.next_seq, commands.len() as u64 + 1);
}

fn huge_timeouts_do_not_overflow(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), p)).unwrap();
    let mut client = node.client().unwrap();
    let ack =
        client.call(Command::ListAsset { asset: AssetId(1), decimals: 2 }, Duration::MAX).unwrap();
    assert_eq!(ack.seq, 1);
    let ev = node.events_from(1, 10, Duration::MAX).unwrap();
    assert_eq!(ev.len(), 1);
}

fn unusable_configurations_are_refused(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        NodeConfig { ring_capacity: 0, ..config(dir.path(), p) },
        NodeConfig { order_capacity: 1 << 40, ..config(dir.path(), p) },
        NodeConfig { levels_per_side: 1 << 62, ..config(dir.path(), p) },
        NodeConfig { snapshot_every_secs: u64::MAX, ..config(dir.path(), p) },
        NodeConfig { segment_bytes: 10, ..config(dir.path(), p) },
    ] {
        assert!(matches!(Node::start(bad), Err(bourse_node::NodeError::Config(_))));
    }
}

fn subscribers_see_every_command_with_its_origin(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), p)).unwrap();
    let mut feed = node.subscribe(1024).unwrap();
    let mut client = node.client_for(77).unwrap();
    let mut refs = Vec::new();
    for (i, c) in setup().iter().enumerate() {
        client.submit(*c, 1000 + i as u64).unwrap();
        refs.push(1000 + i as u64);
        client.ack_timeout(T).unwrap();
    }
    let mut seen = Vec::new();
    while let Some(e) = feed.try_next() {
        assert_eq!(e.origin.source, 77);
        seen.push((e.seq, e.origin.reference));
    }
    let expected: Vec<(u64, u64)> = (1..=setup().len() as u64).zip(refs.iter().copied()).collect();
    assert_eq!(seen, expected);
    assert!(!feed.lagged());
    // Origins are journaled: after a restart the re-derived events carry them too.
    let mut cfg = config(dir.path(), p);
    cfg.event_window = 1000;
    node.stop().unwrap();
    let node = Node::start(cfg).unwrap();
    let replayed = node.events_from(1, 100, T).unwrap();
    assert!(!replayed.is_empty());
    for e in replayed {
        assert_eq!((e.origin.source, e.origin.reference), (77, refs[(e.seq - 1) as usize]));
    }
}

fn a_client_without_acks_is_answered_through_a_notifying_subscription(p: Pipeline) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(NodeConfig { durability: Durability::Write, ..config(dir.path(), p) }).unwrap();
    let notified = Arc::new(AtomicUsize::new(0));
    let counter = notified.clone();
    let mut feed = node
        .subscribe_with_notify(
            4096,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    let mut client = node.client_without_acks(7).unwrap();
    let commands = setup();
    for (i, c) in commands.iter().enumerate() {
        client.submit_from(42, *c, i as u64 + 1).unwrap();
    }
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + T;
    while seen.len() < commands.len() {
        assert!(std::time::Instant::now() < deadline, "events did not arrive");
        match feed.try_next() {
            Some(entry) => seen.push(entry),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    for (i, entry) in seen.iter().enumerate() {
        assert_eq!(entry.command, commands[i], "each entry carries its command");
        assert_eq!((entry.origin.source, entry.origin.reference), (42, i as u64 + 1));
        assert!(!matches!(entry.events[0], Event::Rejected { .. }));
    }
    assert!(notified.load(Ordering::SeqCst) >= 1, "the publisher notified the subscriber");
    assert!(feed.is_empty());
    assert!(client.try_ack().is_none(), "no acknowledgements for this client");
    assert!(!client.acks_lost());
    assert_eq!(node.stats().acks_dropped, 0);
    assert_eq!(node.last_reference(42).unwrap(), commands.len() as u64);
    node.stop().unwrap();
}

/// Rings of two slots everywhere: every stage keeps running into a full output ring (the
/// sequencer's batch is larger than the engine's ring; the engine's outputs outrun the
/// publisher's ring), several clients at once; nothing is lost, reordered or stuck, and a
/// stop drains what was submitted.
fn tiny_rings_under_concurrent_clients_lose_and_reorder_nothing(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), p);
    cfg.ring_capacity = 2;
    cfg.durability = Durability::Write;
    cfg.snapshot_every_commands = 100;
    cfg.event_window = 4096;
    let node = Node::start(cfg.clone()).unwrap();
    let mut feed = node.subscribe(4096).unwrap();
    const CALLERS: u32 = 3;
    const CALLS: u32 = 150;
    const FIRE_AND_FORGET: u32 = 300;
    let callers: Vec<_> = (0..CALLERS).map(|c| node.client_for(100 + c as u64).unwrap()).collect();
    let mut flood = node.client_for(99).unwrap();
    std::thread::scope(|s| {
        for (c, mut client) in callers.into_iter().enumerate() {
            s.spawn(move || {
                let mut last = 0;
                for i in 0..CALLS {
                    let asset = AssetId(10_000 * (c as u32 + 1) + i);
                    let ack = client.call(Command::ListAsset { asset, decimals: 2 }, T).unwrap();
                    assert!(ack.seq > last, "acknowledgements come in sequence order");
                    last = ack.seq;
                    assert!(matches!(ack.events[0], Event::AssetListed { .. }), "{ack:?}");
                }
            });
        }
        s.spawn(move || {
            for i in 0..FIRE_AND_FORGET {
                let mut cmd = Command::ListAsset { asset: AssetId(1_000_000 + i), decimals: 2 };
                loop {
                    match flood.submit(cmd, u64::from(i)) {
                        Ok(()) => break,
                        Err(bourse_node::SubmitError::Busy(sub)) => {
                            cmd = sub.command;
                            std::thread::yield_now();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
    });
    let total = u64::from(CALLERS * CALLS + FIRE_AND_FORGET);
    // Everything submitted is applied before the final snapshot.
    let stats = node.stop().unwrap();
    assert_eq!(stats.published_seq, total, "{stats:?}");
    let mut seqs = Vec::new();
    while let Some(e) = feed.try_next() {
        seqs.push(e.seq);
    }
    assert!(!feed.lagged());
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "every command published, in order");
    let node = Node::start(cfg).unwrap();
    let r = node.recovery();
    assert_eq!((r.snapshot_seq, r.replayed, r.next_seq), (total, 0, total + 1), "{r:?}");
    node.stop().unwrap();
}

#[test]
fn the_pipeline_mode_is_configured_in_snake_case_and_defaults_to_threads() {
    assert_eq!(NodeConfig::default().pipeline, Pipeline::Threads);
    let parse = |json: &str| serde_json::from_str::<NodeConfig>(json);
    assert_eq!(parse(r#"{"pipeline": "single"}"#).unwrap().pipeline, Pipeline::Single);
    assert_eq!(parse(r#"{"pipeline": "threads"}"#).unwrap().pipeline, Pipeline::Threads);
    assert_eq!(parse("{}").unwrap().pipeline, Pipeline::Threads);
    for bad in [r#"{"pipeline": "Single"}"#, r#"{"pipeline": "one"}"#, r#"{"pipelines": "single"}"#]
    {
        assert!(parse(bad).is_err(), "{bad}");
    }
    assert_eq!("single".parse::<Pipeline>(), Ok(Pipeline::Single));
    assert_eq!(Pipeline::Threads.to_string().parse::<Pipeline>(), Ok(Pipeline::Threads));
    assert!("both".parse::<Pipeline>().is_err());
}

/// Runs each named test (a `fn(Pipeline)`) once per pipeline mode, as `threads::NAME` and
/// `single::NAME`.
fn streaming_events_equals_reading_them_one_by_one(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    // A small window and periodic snapshots: most of the stream is re-derived from disk,
    // starting from a snapshot, and its tail comes from memory.
    let node = Node::start(NodeConfig {
        event_window: 16,
        snapshot_every_commands: 40,
        keep_snapshots: 100,
        ..config(dir.path(), p)
    })
    .unwrap();
    let mut client = node.client().unwrap();
    let commands: Vec<Command> = setup()
        .into_iter()
        .chain((0..200).map(|i| {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            order(1 + i % 2, side, 100 + i % 7, i)
        }))
        .collect();
    for c in &commands {
        client.call(*c, T).unwrap();
    }
    let last = node.stats().published_seq;
    for from in [1, 37, 150, last - 3] {
        let mut streamed = Vec::new();
        node.stream_events(from, last + 1, &mut |e| {
            streamed.push(e.clone());
            true
        })
        .unwrap();
        assert_eq!(streamed.len() as u64, last + 1 - from, "from {from}");
        for e in &streamed {
            let one = node.events_from(e.seq, 1, T).unwrap();
            assert_eq!(&one[0], e, "seq {}", e.seq);
        }
    }
    // Stopping early stops.
    let mut n = 0;
    node.stream_events(1, last + 1, &mut |_| {
        n += 1;
        n < 5
    })
    .unwrap();
    assert_eq!(n, 5);
    node.stop().unwrap();
}

fn a_query_says_which_command_its_state_follows(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), p)).unwrap();
    let (markets, seq) = node.query_at(|e, _| e.markets().len()).unwrap();
    assert_eq!((markets, seq), (0, 0));
    let mut client = node.client().unwrap();
    let mut last = 0;
    for c in setup() {
        last = client.call(c, T).unwrap().seq;
    }
    let ((markets, seen), seq) = node.query_at(|e, seq| (e.markets().len(), seq)).unwrap();
    assert_eq!((markets, seen, seq), (1, last, last));
    node.stop().unwrap();
}

#[test]
fn a_pipeline_hook_is_refused_outside_the_single_pipeline() {
    struct Never;
    impl bourse_node::PipelineHook for Never {
        fn turn(&mut self, _: &Engine, _: u64) -> bourse_node::HookTurn {
            unreachable!("never attached")
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), Pipeline::Threads)).unwrap();
    assert!(matches!(node.attach_hook(Box::new(Never)), Err(bourse_node::NodeError::Config(_))));
    node.stop().unwrap();
}

#[test]
fn a_pipeline_hook_turns_with_the_engine_until_it_detaches() {
    use std::sync::mpsc;
    /// Submits the setup from its turns (on the pipeline thread), reports the markets it sees
    /// and the applied seq, and detaches once all of it is applied.
    struct Hook {
        client: bourse_node::Client,
        todo: Vec<Command>,
        seen: mpsc::Sender<(usize, u64)>,
        dropped: mpsc::Sender<()>,
        total: u64,
    }
    impl bourse_node::PipelineHook for Hook {
        fn turn(&mut self, engine: &Engine, applied: u64) -> bourse_node::HookTurn {
            assert_eq!(std::thread::current().name(), Some("bourse-pipeline"));
            let _ = self.seen.send((engine.markets().len(), applied));
            if let Some(c) = self.todo.pop() {
                self.client.submit(c, 0).unwrap();
                return bourse_node::HookTurn::Worked;
            }
            if applied == self.total {
                bourse_node::HookTurn::Detach
            } else {
                bourse_node::HookTurn::Idle
            }
        }
    }
    impl Drop for Hook {
        fn drop(&mut self) {
            let _ = self.dropped.send(());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Pipeline::Single);
    cfg.wait = WaitStrategy::Yield;
    let node = Node::start(cfg).unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let (dropped_tx, dropped) = mpsc::channel();
    let mut todo = setup();
    todo.reverse();
    let total = todo.len() as u64;
    let hook = Hook {
        client: node.client_without_acks(0).unwrap(),
        todo,
        seen: seen_tx,
        dropped: dropped_tx,
        total,
    };
    node.attach_hook(Box::new(hook)).unwrap();
    dropped.recv_timeout(T).expect("the hook detached and was dropped");
    let seen: Vec<(usize, u64)> = seen.try_iter().collect();
    assert_eq!(seen.first(), Some(&(0, 0)));
    assert_eq!(seen.last(), Some(&(1, total)));
    // Each command submitted in one turn is applied by the next: the hook sees every seq.
    for w in seen.windows(2) {
        assert!(w[1].1 >= w[0].1 && w[1].1 <= w[0].1 + 1, "{w:?}");
    }
    assert_eq!(node.stats().applied_seq, total);
    node.stop().unwrap();
}

fn latency_histograms_and_ring_depths_follow_the_commands(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), p)).unwrap();
    let mut client = node.client().unwrap();
    let before = node.stats();
    assert_eq!((before.engine_apply_ns.count, before.journal_commit_ns.count), (0, 0));
    let commands: Vec<Command> = setup()
        .into_iter()
        .chain((0..100).map(|i| order(1 + i % 2, Side::Buy, 100 + i, i)))
        .collect();
    let n = commands.len() as u64;
    for cmd in commands {
        client.call(cmd, T).unwrap();
    }
    let s = node.stats();
    // Every applied command was timed once; every group commit once.
    assert_eq!(s.engine_apply_ns.count, n);
    assert_eq!(s.applied_seq, n);
    assert_eq!(s.journal_commit_ns.count, s.commits);
    assert!(s.journal_commit_ns.sum_ns > 0 && s.engine_apply_ns.sum_ns > 0);
    for h in [&s.engine_apply_ns, &s.journal_commit_ns] {
        assert_eq!(h.bounds_ns.len(), h.cumulative.len());
        assert!(h.bounds_ns.windows(2).all(|w| w[0] < w[1]));
        assert!(h.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!(*h.cumulative.last().unwrap() <= h.count);
    }
    // At rest (every call was acknowledged, so published): nothing waits anywhere.
    assert_eq!((s.sequencer_ring_depth, s.engine_ring_depth, s.publisher_ring_depth), (0, 0, 0));
    node.stop().unwrap();
}

/// A client made with a notify is rung after its acknowledgements are in its ring: a reader
/// that sleeps until rung, then drains the ring, gets every acknowledgement without polling.
fn a_notifying_client_is_rung_after_its_acknowledgements_arrive(p: Pipeline) {
    use std::sync::{Condvar, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), p)).unwrap();
    let bell = Arc::new((Mutex::new(0u64), Condvar::new()));
    let ringer = bell.clone();
    let mut client = node
        .client_with_notify(
            7,
            Arc::new(move || {
                *ringer.0.lock().unwrap() += 1;
                ringer.1.notify_one();
            }),
        )
        .unwrap();
    let commands = setup();
    for (i, c) in commands.iter().enumerate() {
        client.submit(*c, i as u64 + 1).unwrap();
    }
    let mut acks = Vec::new();
    let mut rings_seen = 0;
    while acks.len() < commands.len() {
        while let Some(ack) = client.try_ack() {
            acks.push(ack);
        }
        if acks.len() == commands.len() {
            break;
        }
        // Sleep until rung (no polling): a ring that came before this wait is not lost,
        // since the count is compared with what was seen.
        let guard = bell.0.lock().unwrap();
        let (guard, timeout) = bell
            .1
            .wait_timeout_while(guard, Duration::from_secs(10), |rings| *rings == rings_seen)
            .unwrap();
        assert!(!timeout.timed_out(), "no ring for {} acknowledgements", commands.len());
        rings_seen = *guard;
    }
    let correlations: Vec<u64> = acks.iter().map(|a| a.correlation).collect();
    assert_eq!(correlations, (1..=commands.len() as u64).collect::<Vec<_>>());
    assert!(*bell.0.lock().unwrap() >= 1);
    assert!(*bell.0.lock().unwrap() <= commands.len() as u64, "at most one ring per burst");
    node.stop().unwrap();
}

macro_rules! in_both_pipelines {
    ($($name:ident),* $(,)?) => {
        mod threads {
            $( #[test] fn $name() { super::$name(bourse_node::Pipeline::Threads) } )*
        }
        mod single {
            $( #[test] fn $name() { super::$name(bourse_node::Pipeline::Single) } )*
        }
    };
}

in_both_pipelines!(
    commands_are_sequenced_acknowledged_and_survive_a_restart,
    a_full_submission_ring_is_explicit_back_pressure,
    snapshot_plus_replay_equals_full_replay_in_state_and_events,
    a_client_that_never_reads_its_acks_stalls_nobody,
    a_new_client_always_gets_its_first_acknowledgement,
    a_panicking_thread_stops_the_node_instead_of_hanging_it,
    the_final_snapshot_covers_everything_submitted_before_stop,
    huge_timeouts_do_not_overflow,
    unusable_configurations_are_refused,
    subscribers_see_every_command_with_its_origin,
    a_client_without_acks_is_answered_through_a_notifying_subscription,
    tiny_rings_under_concurrent_clients_lose_and_reorder_nothing,
    streaming_events_equals_reading_them_one_by_one,
    a_query_says_which_command_its_state_follows,
    latency_histograms_and_ring_depths_follow_the_commands,
    a_notifying_client_is_rung_after_its_acknowledgements_arrive,
);
