//! Memory of the roster, measured (not estimated) with a counting allocator: bytes per member
//! and per actor entry at 10,000 members x 10 actors, the actor index and the node id strings
//! included.
//!
//! `cargo bench --bench memory`.

use gossip_roster::{ClusterEvent, NodeId, Roster};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes (requested sizes; the allocator's own overhead is not included).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Builds a roster of `members` nodes (realistic ids and addresses) with `actors` each;
/// returns the bytes it holds. The events, node ids included, are created inside the measured
/// window and dropped before the count: what is left is the roster and the ids it shares
/// (a node id is one shared string, allocated once per member, which the count must include).
fn measure(members: usize, actors: usize) -> isize {
    let before = live();
    let events: Vec<ClusterEvent> = (0..members)
        .flat_map(|i| {
            let node = NodeId::new(format!("node-{i:05}.prod.example"));
            let hello = ClusterEvent::NewNode {
                node: node.clone(),
                generation: 1_795_000_000_000 + i as u64,
                version: 1,
                addr: format!("ws://10.{}.{}.{}:7000", i / 65536, (i / 256) % 256, i % 256),
                actors: Default::default(),
            };
            std::iter::once(hello).chain((0..actors).map(move |k| ClusterEvent::ActorAdded {
                node: node.clone(),
                generation: 1_795_000_000_000 + i as u64,
                version: 2 + k as u64,
                actor: format!("service-{k}/shard-{}", i % 64),
            }))
        })
        .collect();
    let mut roster = Roster::new();
    for e in &events {
        roster.apply(e);
    }
    drop(events);
    let held = live() - before;
    drop(roster);
    held
}

/// Bytes of `members` node id strings alone (the shared strings, not the vector holding them).
fn id_bytes(members: usize) -> isize {
    let mut ids = Vec::with_capacity(members);
    let before = live();
    for i in 0..members {
        ids.push(NodeId::new(format!("node-{i:05}.prod.example")));
    }
    let held = live() - before;
    drop(ids);
    held
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = 10_000;
    let bare = measure(n, 0);
    let full = measure(n, 10);
    let per_member = bare as f64 / n as f64;
    let per_actor = (full - bare) as f64 / (n * 10) as f64;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("\n## memory summary (live heap bytes, counting allocator)\n");
    println!("| what | measured | goal | |");
    println!("|---|---|---|---|");
    println!(
        "| roster of {n} members, no actors | {:.1} MiB | - | |",
        bare as f64 / 1048576.0
    );
    println!(
        "| roster of {n} members x 10 actors | {:.1} MiB | - | |",
        full as f64 / 1048576.0
    );
    println!(
        "| per member (record, id string, address, maps) | {per_member:.0} B | < 2 KiB | {} |",
        met(per_member < 2048.0)
    );
    println!(
        "| of which the node id string | {:.0} B | - | |",
        id_bytes(n) as f64 / n as f64
    );
    println!(
        "| per actor entry (entry + index) | {per_actor:.0} B | < 200 B | {} |",
        met(per_actor < 200.0)
    );
}
