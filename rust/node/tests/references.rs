//! The last reference per source: tracked as commands are applied, and the same after every
//! kind of restart (graceful, crash-like, from a snapshot after compaction) as a replay of
//! the whole journal would give.

mod storage_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bourse_engine::Command;
use bourse_node::journal::list_segments;
use bourse_node::recovery::replay_directory_state;
use bourse_node::snapfile::{list_snapshots, SNAPSHOT_HEADER_LEN};
use bourse_node::{
    Client, Durability, Node, NodeConfig, NodeError, Pipeline, SubmitError, WaitStrategy,
};
use proptest::prelude::*;
use storage_common::{command, setup};

const T: Duration = Duration::from_secs(10);

fn config(dir: &Path, pipeline: Pipeline) -> NodeConfig {
    NodeConfig {
        pipeline,
        data_dir: dir.to_path_buf(),
        durability: Durability::Write,
        segment_bytes: 64 << 20,
        snapshot_every_commands: 0,
        snapshot_every_secs: 0,
        keep_snapshots: 1,
        ring_capacity: 1024,
        wait: WaitStrategy::SpinThenPark { spins: 100, park_timeout_us: 200 },
        order_capacity: 1024,
        levels_per_side: 64,
        event_window: 16,
        ..NodeConfig::default()
    }
}

/// The model: the maximum reference per source, sources 0 and references 0 left out.
#[derive(Default)]
struct Model(BTreeMap<u64, u64>);

impl Model {
    fn observe(&mut self, source: u64, reference: u64) {
        if source != 0 && reference != 0 {
            let last = self.0.entry(source).or_insert(0);
            *last = (*last).max(reference);
        }
    }

    fn get(&self, source: u64) -> u64 {
        self.0.get(&source).copied().unwrap_or(0)
    }

    fn table(&self) -> Vec<(u64, u64)> {
        self.0.iter().map(|(&s, &r)| (s, r)).collect()
    }
}

/// Submit `(source, reference)` commands through one multiplexing client (the way a gateway
/// does), numbering commands from `*next`, and wait for every acknowledgement.
fn submit_all(client: &mut Client, model: &mut Model, next: &mut u64, ops: &[(u64, u64)]) {
    for &(source, reference) in ops {
        let mut cmd: Command = command(*next);
        *next += 1;
        loop {
            match client.submit_from(source, cmd, reference) {
                Ok(()) => break,
                Err(SubmitError::Busy(s)) => {
                    cmd = s.command;
                    std::thread::yield_now();
                }
                Err(e) => panic!("submit: {e}"),
            }
        }
        model.observe(source, reference);
    }
    for &(_, reference) in ops {
        let ack = client.ack_timeout(T).expect("an acknowledgement");
        assert_eq!(ack.correlation, reference, "acknowledgements come back in order");
    }
}

/// The node's table, whole and per source, against the model.
fn assert_table(node: &Node, model: &Model, context: &str) {
    assert_eq!(node.last_references().unwrap(), model.table(), "{context}: the table");
    for source in [0, 1, 2, 3, 7, 11, 1 << 40, u64::MAX] {
        assert_eq!(node.last_reference(source).unwrap(), model.get(source), "{context}: {source}");
    }
}

/// A fresh node with the market set up by source 0 (which the table never tracks).
fn start_with_setup(cfg: &NodeConfig) -> (Node, Client) {
    let node = Node::start(cfg.clone()).unwrap();
    let mut client = node.client().unwrap();
    for cmd in setup() {
        client.call(cmd, T).unwrap();
    }
    (node, client)
}

fn references_from_several_sources_are_kept_and_survive_a_stop_and_start(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), p);
    let mut model = Model::default();
    let mut next = 0;
    {
        let (node, mut client) = start_with_setup(&cfg);
        assert_eq!(node.last_references().unwrap(), vec![]);
        assert_eq!(node.last_reference(7).unwrap(), 0, "an unknown source reads 0");
        // Interleaved sources; source 7 goes back down once (the node records, it does not
        // enforce), and source 3 only ever sends reference 0.
        let ops = [(7, 1), (11, 100), (7, 2), (1 << 40, 5), (7, 10), (11, 101), (7, 4), (3, 0)];
        submit_all(&mut client, &mut model, &mut next, &ops);
        assert_table(&node, &model, "running");
        assert_eq!(node.last_reference(7).unwrap(), 10);
        assert_eq!(node.last_references().unwrap(), vec![(7, 10), (11, 101), (1 << 40, 5)]);
        // A client of its own for a source works the same as a multiplexing one.
        let mut own = node.client_for(11).unwrap();
        own.submit(command(next), 150).unwrap();
        next += 1;
        model.observe(11, 150);
        assert_eq!(own.ack_timeout(T).unwrap().correlation, 150);
        assert_eq!(node.last_reference(11).unwrap(), 150);
        node.stop().unwrap();
    }
    // A graceful stop ends with a snapshot: the table comes back from it, nothing replayed.
    let node = Node::start(cfg.clone()).unwrap();
    let r = node.recovery().clone();
    assert!(r.snapshot_seq > 0 && r.replayed == 0, "{r:?}");
    assert_table(&node, &model, "after stop and start");
    let mut client = node.client().unwrap();
    submit_all(&mut client, &mut model, &mut next, &[(7, 11), (2, 1)]);
    assert_table(&node, &model, "going on after the restart");
    node.stop().unwrap();
    let node = Node::start(cfg).unwrap();
    assert_table(&node, &model, "after a second restart");
    node.stop().unwrap();
}

fn reference_zero_and_source_zero_are_ignored(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), p);
    let mut model = Model::default();
    let mut next = 0;
    let (node, mut client) = start_with_setup(&cfg);
    submit_all(&mut client, &mut model, &mut next, &[(0, 50), (0, 7), (5, 0), (6, 3), (6, 0)]);
    assert_eq!(node.last_references().unwrap(), vec![(6, 3)], "only a named source's non-zero");
    assert_eq!(node.last_reference(0).unwrap(), 0);
    assert_eq!(node.last_reference(5).unwrap(), 0);
    assert_eq!(node.last_reference(6).unwrap(), 3);
    // Commands from source 0 (the setup, `Client::call`) never show up either.
    client.call(command(next), T).unwrap();
    assert_table(&node, &model, "after a call from source 0");
    drop(node);
    let node = Node::start(cfg).unwrap();
    assert_table(&node, &model, "after a restart");
}

fn a_crash_like_restart_rebuilds_the_table_from_the_journal(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), p);
    let mut model = Model::default();
    let mut next = 0;
    {
        let (node, mut client) = start_with_setup(&cfg);
        let ops: Vec<(u64, u64)> = (1..=60).map(|i| (1 + i % 3, i * 10 + i % 4)).collect();
        submit_all(&mut client, &mut model, &mut next, &ops);
        assert_table(&node, &model, "running");
        // Dropped without `stop`: no final snapshot.
        drop(node);
    }
    assert!(list_snapshots(dir.path()).unwrap().is_empty());
    let node = Node::start(cfg.clone()).unwrap();
    let r = node.recovery().clone();
    assert_eq!((r.snapshot_seq, r.replayed), (0, setup().len() as u64 + 60));
    assert_table(&node, &model, "after the crash");
    drop(node);
    // A replay of the directory by a tool sees the same.
    let replayed = replay_directory_state(&cfg).unwrap();
    assert_eq!(replayed.last_references.to_sorted_vec(), model.table());
}

fn the_table_comes_back_from_a_snapshot_after_compaction_with_later_commands_replayed(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig { segment_bytes: 512, ..config(dir.path(), p) };
    let mut model = Model::default();
    let mut next = 0;
    let snapshot_seq;
    {
        let (node, mut client) = start_with_setup(&cfg);
        // Sources 1 and 2 are only seen before the snapshot; 3 on both sides of it; 4 after.
        let before: Vec<(u64, u64)> = (1..=80).map(|i| (1 + i % 3, 1_000 + i)).collect();
        submit_all(&mut client, &mut model, &mut next, &before);
        snapshot_seq = node.snapshot_now().unwrap();
        assert_eq!(snapshot_seq, setup().len() as u64 + 80);
        let after: Vec<(u64, u64)> = (1..=25).map(|i| (3 + i % 2, 5_000 + i)).collect();
        submit_all(&mut client, &mut model, &mut next, &after);
        assert_table(&node, &model, "running");
        drop(node);
    }
    // Compaction deleted the start of the journal: the records before the snapshot are gone,
    // so the table for sources 1 and 2 can only have come from the snapshot.
    let first = list_segments(dir.path()).unwrap()[0].first_seq;
    assert!(first > 1 && first <= snapshot_seq + 1, "journal starts at {first}");
    let snaps = list_snapshots(dir.path()).unwrap();
    assert_eq!(snaps.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![snapshot_seq]);
    let node = Node::start(cfg.clone()).unwrap();
    let r = node.recovery().clone();
    assert_eq!((r.snapshot_seq, r.replayed), (snapshot_seq, 25), "{r:?}");
    assert_table(&node, &model, "after compaction and a crash");
    assert!(model.get(1) > 0 && model.get(2) > 0 && model.get(4) > 0);
    node.stop().unwrap();
    // And after a graceful stop, whose final snapshot compacts again.
    let node = Node::start(cfg).unwrap();
    assert_eq!(node.recovery().replayed, 0);
    assert_table(&node, &model, "after the final snapshot");
}

/// Rewrite a snapshot file as format 1 (only the version and the header checksum change).
fn make_format_1(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > SNAPSHOT_HEADER_LEN);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn a_format_1_snapshot_is_passed_over_and_the_journal_rebuilds_the_table(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), p);
    let mut model = Model::default();
    let mut next = 0;
    {
        let (node, mut client) = start_with_setup(&cfg);
        submit_all(&mut client, &mut model, &mut next, &[(1, 5), (2, 9), (1, 6)]);
        node.stop().unwrap();
    }
    let snaps = list_snapshots(dir.path()).unwrap();
    assert_eq!(snaps.len(), 1);
    make_format_1(&snaps[0].path);
    // The whole journal is still there: a full replay gives the exact table.
    let node = Node::start(cfg).unwrap();
    let r = node.recovery().clone();
    assert_eq!((r.snapshot_seq, r.replayed), (0, setup().len() as u64 + 3));
    assert_eq!(r.skipped_snapshots.len(), 1);
    assert!(r.skipped_snapshots[0].contains("format version 1"), "{:?}", r.skipped_snapshots);
    assert_table(&node, &model, "from the journal");
}

fn a_format_1_snapshot_with_the_journal_compacted_is_refused_by_name(p: Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig { segment_bytes: 512, ..config(dir.path(), p) };
    let mut model = Model::default();
    let mut next = 0;
    {
        let (node, mut client) = start_with_setup(&cfg);
        let ops: Vec<(u64, u64)> = (1..=40).map(|i| (1, i)).collect();
        submit_all(&mut client, &mut model, &mut next, &ops);
        node.stop().unwrap();
    }
    assert!(list_segments(dir.path()).unwrap()[0].first_seq > 1, "the journal was compacted");
    let snap = list_snapshots(dir.path()).unwrap().pop().unwrap();
    make_format_1(&snap.path);
    let e = Node::start(cfg).err().expect("recovery refuses");
    let msg = e.to_string();
    assert!(matches!(e, NodeError::Recovery(_)), "{e:?}");
    assert!(msg.contains("journal starts at"), "{msg}");
    assert!(msg.contains(snap.path.to_str().unwrap()), "{msg}");
    assert!(msg.contains("format version 1") && msg.contains("no last-reference table"), "{msg}");
}

/// One run of the property: submit `ops` (snapshotting on demand after `snapshot_after` of
/// them, and periodically if `every` is set), restart gracefully or crash-like, and compare.
fn restart_equals_the_model(
    ops: &[(u64, u64)],
    snapshot_after: Option<usize>,
    every: u64,
    graceful: bool,
    p: Pipeline,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        NodeConfig { segment_bytes: 512, snapshot_every_commands: every, ..config(dir.path(), p) };
    let mut model = Model::default();
    let mut next = 0;
    {
        let node = Node::start(cfg.clone()).unwrap();
        let mut client = node.client().unwrap();
        let split = snapshot_after.unwrap_or(ops.len()).min(ops.len());
        submit_all(&mut client, &mut model, &mut next, &ops[..split]);
        if snapshot_after.is_some() {
            node.snapshot_now().unwrap();
        }
        submit_all(&mut client, &mut model, &mut next, &ops[split..]);
        prop_assert_eq!(node.last_references().unwrap(), model.table());
        if graceful {
            node.stop().unwrap();
        } else {
            drop(node);
        }
    }
    let node = Node::start(cfg.clone()).unwrap();
    prop_assert_eq!(node.recovery().next_seq, ops.len() as u64 + 1);
    prop_assert_eq!(node.last_references().unwrap(), model.table());
    for &(source, _) in ops {
        prop_assert_eq!(node.last_reference(source).unwrap(), model.get(source));
    }
    drop(node);
    prop_assert_eq!(
        replay_directory_state(&cfg).unwrap().last_references.to_sorted_vec(),
        model.table()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn after_any_restart_the_table_is_the_maximum_per_source(
        ops in prop::collection::vec(
            (prop::sample::select(vec![0u64, 1, 2, 3, 1 << 40, u64::MAX]),
             prop_oneof![Just(0u64), 0u64..40, Just(u64::MAX)]),
            0..80,
        ),
        snapshot_after in prop::option::of(0usize..80),
        every in prop_oneof![Just(0u64), 10u64..30],
        graceful in any::<bool>(),
        p in prop_oneof![Just(Pipeline::Threads), Just(Pipeline::Single)],
    ) {
        restart_equals_the_model(&ops, snapshot_after, every, graceful, p)?;
    }
}

/// Runs each named test (a `fn(Pipeline)`) once per pipeline mode, as `threads::NAME` and
/// `single::NAME`.
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
    references_from_several_sources_are_kept_and_survive_a_stop_and_start,
    reference_zero_and_source_zero_are_ignored,
    a_crash_like_restart_rebuilds_the_table_from_the_journal,
    the_table_comes_back_from_a_snapshot_after_compaction_with_later_commands_replayed,
    a_format_1_snapshot_is_passed_over_and_the_journal_rebuilds_the_table,
    a_format_1_snapshot_with_the_journal_compacted_is_refused_by_name,
);
