//! One desk over several nodes sharing a PostgreSQL store.
//!
//! A call stays on the node that answered it (its audio is there), so the
//! desk is not moved into the database; each node publishes its own part
//! and mirrors the others':
//! - its state (callers waiting and talking, who has the desk open, bot
//!   calls) as its row in `desk_nodes`, rewritten on every change and every
//!   second — the truth a node catches up from, and how a dead node's
//!   callers disappear (its row stops being refreshed);
//! - each event as a `NOTIFY` on [`CHANNEL`], so pages on other nodes see a
//!   caller waiting or a transcript line as soon as the local page does.
//!
//! Writes carry a version that grows with each change; a mirror keeps the
//! newest, so a row read before an event never undoes it. Taking a call on
//! another node's caller goes through that node (`owner`): the server
//! forwards the agent's request there and the agent's audio flows to it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use super::{Desk, DeskEvent, WaitingInfo};
use crate::store::{now_ms, NodeRow, Store};

/// The `LISTEN/NOTIFY` channel of desk events.
pub const CHANNEL: &str = "attendant_desk";
/// How often a node rewrites its row and rereads the others'.
const SYNC: Duration = Duration::from_secs(1);
/// A row not refreshed for this long is a dead node's.
const STALE_MS: i64 = 5_000;
/// Longest wait for one statement of the sync loop: a stalled connection
/// must not stop this node's row (others would think it dead) or its view.
const DB_WAIT: Duration = Duration::from_secs(3);
/// Rows of nodes gone this long are deleted by whoever notices.
const FORGET_MS: i64 = 600_000;
/// Changes waiting to be published; more are dropped (the next row write
/// carries the state; only those events' live feed lines are lost).
const OUTBOUND: usize = 1024;
/// `NOTIFY` payloads must stay under 8,000 bytes.
const MAX_PAYLOAD: usize = 7_900;
/// A transcript line is cut to this many characters for other nodes.
const MAX_LINE: usize = 1_000;
/// Agent legs taken through this node for a call on another (to hang up
/// through this node): the newest this many.
const LEGS: usize = 256;

/// One node's part of the desk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    pub waiting: Vec<WaitingInfo>,
    /// (caller, agent)
    pub talking: Vec<(WaitingInfo, String)>,
    /// Bot calls: (id, channel).
    pub live: Vec<(String, String)>,
    /// (name, sees every queue)
    pub online: Vec<(String, bool)>,
}

/// A desk event as sent to the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    pub node: String,
    pub url: String,
    /// The sender's state version this event is part of.
    pub v: i64,
    pub event: DeskEvent,
}

struct Remote {
    url: String,
    version: i64,
    state: NodeState,
}

/// The other nodes' desks, as this node last heard of them.
#[derive(Default)]
pub struct Mirror {
    nodes: HashMap<String, Remote>,
    /// Agent leg id → the URL of the node it runs on.
    legs: VecDeque<(String, String)>,
}

impl Mirror {
    pub(super) fn online(&self) -> Vec<(String, bool)> {
        self.nodes
            .values()
            .flat_map(|r| r.state.online.iter().cloned())
            .collect()
    }

    pub(super) fn waiting(&self, id: &str) -> Option<&WaitingInfo> {
        self.nodes
            .values()
            .find_map(|r| r.state.waiting.iter().find(|w| w.call_id == id))
    }

    pub(super) fn talking(&self, id: &str) -> Option<&(WaitingInfo, String)> {
        self.nodes
            .values()
            .find_map(|r| r.state.talking.iter().find(|t| t.0.call_id == id))
    }

    pub(super) fn all_waiting(&self) -> Vec<WaitingInfo> {
        self.nodes
            .values()
            .flat_map(|r| r.state.waiting.iter().cloned())
            .collect()
    }

    pub(super) fn extend_into(&self, all: &mut NodeState) {
        for r in self.nodes.values() {
            all.waiting.extend(r.state.waiting.iter().cloned());
            all.talking.extend(r.state.talking.iter().cloned());
            all.live.extend(r.state.live.iter().cloned());
            all.online.extend(r.state.online.iter().cloned());
        }
    }

    /// The URL of the node holding call `id` (waiting or with an agent).
    fn owner(&self, id: &str) -> Option<String> {
        self.nodes
            .values()
            .find(|r| {
                r.state.waiting.iter().any(|w| w.call_id == id)
                    || r.state.talking.iter().any(|t| t.0.call_id == id)
            })
            .map(|r| r.url.clone())
    }

    fn entry(&mut self, node: &str, url: &str) -> &mut Remote {
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| Remote {
                url: url.to_string(),
                version: i64::MIN,
                state: NodeState::default(),
            })
    }

    /// A node's row: the live nodes are exactly those with a fresh row.
    fn apply_rows(&mut self, rows: Vec<(NodeRow, NodeState)>) {
        let live: Vec<String> = rows.iter().map(|(r, _)| r.node.clone()).collect();
        self.nodes.retain(|n, _| live.contains(n));
        for (row, state) in rows {
            let r = self.entry(&row.node, &row.url);
            if row.version >= r.version {
                r.version = row.version;
                r.url = row.url;
                r.state = state;
            }
        }
    }

    /// Applies what another node's event changed (if no newer state of that
    /// node is already here).
    fn apply(&mut self, n: &Note) {
        let r = self.entry(&n.node, &n.url);
        if n.v < r.version {
            return;
        }
        r.version = n.v;
        let st = &mut r.state;
        let forget = |st: &mut NodeState, id: &str| {
            st.waiting.retain(|w| w.call_id != id);
            st.talking.retain(|t| t.0.call_id != id);
        };
        match &n.event {
            DeskEvent::Waiting(w) => {
                forget(st, &w.call_id);
                st.waiting.push(w.clone());
            }
            DeskEvent::Taken { call_id, agent } => {
                if let Some(i) = st.waiting.iter().position(|w| &w.call_id == call_id) {
                    let w = st.waiting.remove(i);
                    st.talking.push((w, agent.clone()));
                }
            }
            DeskEvent::Left { call_id, .. } => forget(st, call_id),
            DeskEvent::Started { call_id, channel } => {
                st.live.retain(|(id, _)| id != call_id);
                st.live.push((call_id.clone(), channel.clone()));
            }
            DeskEvent::Ended { call_id } => {
                forget(st, call_id);
                st.live.retain(|(id, _)| id != call_id);
            }
            DeskEvent::Line { .. } => {}
        }
    }
}

impl Desk {
    /// Whether this node holds call `id` at the desk (waiting or talking).
    pub fn holds(&self, id: &str) -> bool {
        let inner = self.inner.lock();
        inner.waiting.contains_key(id) || inner.talking.contains_key(id)
    }

    /// The URL of the other node holding call `id` at the desk, if one does.
    pub fn owner(&self, id: &str) -> Option<String> {
        if self.holds(id) {
            return None;
        }
        self.remote.lock().owner(id)
    }

    /// Agent leg `leg` was taken through this node but runs on `url`.
    pub fn remember_leg(&self, leg: &str, url: &str) {
        let mut m = self.remote.lock();
        if m.legs.len() >= LEGS {
            m.legs.pop_front();
        }
        m.legs.push_back((leg.to_string(), url.to_string()));
    }

    /// Where agent leg `leg` runs, if it was taken through this node for a
    /// call on another.
    pub fn leg_owner(&self, leg: &str) -> Option<String> {
        let m = self.remote.lock();
        m.legs
            .iter()
            .find(|(l, _)| l == leg)
            .map(|(_, u)| u.clone())
    }

    /// Another node's event: mirrored, and shown on this node's pages.
    pub fn remote_event(&self, n: Note) {
        self.remote.lock().apply(&n);
        let _ = self.feed.send(Arc::new(n.event));
    }

    /// The other nodes' fresh rows (unreadable states are skipped).
    pub fn remote_rows(&self, rows: Vec<NodeRow>) {
        let parsed = rows
            .into_iter()
            .filter_map(|r| {
                let st = serde_json::from_str(&r.state).ok()?;
                Some((r, st))
            })
            .collect();
        self.remote.lock().apply_rows(parsed);
    }

    /// Publishes this node's desk to, and mirrors, the other nodes sharing
    /// `store` (when it is PostgreSQL); `url` is where they reach this
    /// node's HTTP API. Runs until aborted.
    pub fn link(self: &Arc<Self>, store: Store, url: String) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let _ = self.outbound.set(tx);
        let desk = self.clone();
        let sync = Versions::default();
        tokio::spawn(async move {
            let listening = tokio::spawn(listen(desk.clone(), store.clone()));
            let rows = tokio::spawn(sync_rows(
                desk.clone(),
                store.clone(),
                url.clone(),
                sync.clone(),
            ));
            publish(store, url, rx, sync).await;
            listening.abort();
            rows.abort();
        })
    }
}

/// What the event sender and the row writer share. They run apart so that
/// an event is never held up behind a row write or a read of the others'
/// rows (each a database round trip, slow on a busy machine).
#[derive(Clone, Default)]
struct Versions {
    /// The state version: taken by the sender for each change and by the
    /// row writer before it reads the state, so a row with a higher version
    /// than an event's always includes that event's change.
    version: Arc<AtomicI64>,
    /// The state changed: write the row now rather than at the next tick.
    changed: Arc<Notify>,
}

impl Versions {
    fn next(&self) -> i64 {
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Reads other nodes' events as they come.
async fn listen(desk: Arc<Desk>, store: Store) {
    let me = store.node_id().to_string();
    loop {
        let mut l = match store.listen(CHANNEL).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "desk: cannot listen to the other nodes; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        loop {
            match l.recv().await {
                Ok(n) => match serde_json::from_str::<Note>(n.payload()) {
                    Ok(note) if note.node != me => desk.remote_event(note),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "desk: unreadable note"),
                },
                Err(e) => {
                    // The listener reconnects on the next `recv`; what was
                    // sent meanwhile comes back with the rows.
                    tracing::warn!(error = %e, "desk: listening connection lost");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Sends this node's events to the others as they come.
async fn publish(
    store: Store,
    url: String,
    mut rx: mpsc::Receiver<Option<Arc<DeskEvent>>>,
    sync: Versions,
) {
    let me = store.node_id().to_string();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        // Transcript lines change nobody's state: no new version, no row.
        let changes = batch
            .iter()
            .any(|e| !matches!(e.as_deref(), Some(DeskEvent::Line { .. })));
        let v = if changes {
            sync.changed.notify_one();
            sync.next()
        } else {
            sync.version.load(Ordering::SeqCst)
        };
        for e in batch.into_iter().flatten() {
            let note = Note {
                node: me.clone(),
                url: url.clone(),
                v,
                event: (*e).clone(),
            };
            let Some(payload) = payload(note) else {
                continue;
            };
            match tokio::time::timeout(DB_WAIT, store.notify(CHANNEL, &payload)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "desk: cannot tell the other nodes"),
                Err(_) => tracing::warn!("desk: telling the other nodes timed out"),
            }
        }
    }
}

/// Writes this node's row on every change and every second, and rereads
/// the others' rows every second.
async fn sync_rows(desk: Arc<Desk>, store: Store, url: String, sync: Versions) {
    let me = store.node_id().to_string();
    let mut tick = tokio::time::interval(SYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = sync.changed.notified() => {
                write_row(&desk, &store, &me, &url, sync.next()).await;
            }
            _ = tick.tick() => {
                write_row(&desk, &store, &me, &url, sync.next()).await;
                let now = now_ms();
                match tokio::time::timeout(DB_WAIT, store.node_rows(now - STALE_MS, &me)).await {
                    Ok(Ok(rows)) => desk.remote_rows(rows),
                    Ok(Err(e)) => tracing::warn!(error = %e, "desk: cannot read the other nodes"),
                    Err(_) => tracing::warn!("desk: reading the other nodes timed out"),
                }
                ticks += 1;
                if ticks.is_multiple_of(60) {
                    let _ = tokio::time::timeout(DB_WAIT, store.drop_node_rows("", now - FORGET_MS)).await;
                }
            }
        }
    }
}

async fn write_row(desk: &Desk, store: &Store, me: &str, url: &str, version: i64) {
    let state = serde_json::to_string(&desk.local_state()).unwrap_or_default();
    let row = NodeRow {
        node: me.to_string(),
        url: url.to_string(),
        version,
        state,
    };
    match tokio::time::timeout(DB_WAIT, store.put_node_row(&row, now_ms())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "desk: cannot publish this node's desk"),
        Err(_) => tracing::warn!("desk: publishing this node's desk timed out"),
    }
}

/// The note as a `NOTIFY` payload: a long transcript line is cut; a note
/// still too long is not sent (the rows carry the state).
fn payload(mut note: Note) -> Option<String> {
    if let DeskEvent::Line { text, .. } = &mut note.event {
        if let Some((i, _)) = text.char_indices().nth(MAX_LINE) {
            text.truncate(i);
        }
    }
    let s = serde_json::to_string(&note).ok()?;
    (s.len() <= MAX_PAYLOAD).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::tests::info;
    use crate::desk::{DeskConfig, Viewer};

    fn viewer(name: &str, all: bool) -> Viewer {
        Viewer {
            name: name.into(),
            all,
        }
    }

    fn row(node: &str, version: i64, d: &Desk) -> NodeRow {
        NodeRow {
            node: node.into(),
            url: format!("http://{node}"),
            version,
            state: serde_json::to_string(&d.local_state()).unwrap(),
        }
    }

    fn note(node: &str, v: i64, event: DeskEvent) -> Note {
        Note {
            node: node.into(),
            url: format!("http://{node}"),
            v,
            event,
        }
    }

    /// Node A holds a caller; node B sees it through A's row, orders it
    /// with its own, lets its agents take it through A, and counts A's
    /// agents as online.
    #[test]
    fn a_node_sees_and_routes_to_another_nodes_callers() {
        let cfg = DeskConfig {
            require_online: true,
            ..Default::default()
        };
        let a = Desk::new(cfg.clone());
        let b = Desk::new(cfg);
        let (tx, _rx) = mpsc::channel(4);
        // Nobody has the desk open anywhere: A keeps its caller.
        assert!(a.enqueue(info("x", "general", 0, 1), tx.clone()).is_err());
        // Alice opens the desk on B; A hears of it from B's row.
        let _alice = b.present(&viewer("alice", false));
        a.remote_rows(vec![row("b", 1, &b)]);
        assert_eq!(a.online(), ["alice"]);
        a.enqueue(info("x", "general", 50, 1), tx.clone()).unwrap();
        b.enqueue(info("y", "general", 0, 2), tx.clone()).unwrap();
        b.remote_rows(vec![row("a", 1, &a)]);
        let order: Vec<String> = b
            .snapshot(&viewer("alice", false))
            .waiting
            .into_iter()
            .map(|w| w.call_id)
            .collect();
        assert_eq!(order, ["x", "y"]);
        // B's caller is second in line, behind A's higher-priority caller.
        assert_eq!(b.position("y"), Some(2));
        assert_eq!(b.owner("x").as_deref(), Some("http://a"));
        assert_eq!(b.owner("y"), None, "B's own caller is taken on B");
        assert!(b.may_see(&viewer("alice", false), "x"));
        // A's row stops being fresh (A died): its caller is gone from B.
        b.remote_rows(vec![]);
        assert_eq!(b.owner("x"), None);
        assert_eq!(b.snapshot(&viewer("alice", false)).waiting.len(), 1);
    }

    /// Events keep the mirror current between row writes and reach the
    /// pages; a row older than an event already applied does not undo it.
    #[test]
    fn events_update_the_mirror_and_an_older_row_does_not_undo_them() {
        let b = Desk::new(DeskConfig::default());
        let mut feed = b.subscribe();
        let a = Desk::new(DeskConfig {
            require_online: false,
            ..Default::default()
        });
        let (tx, _rx) = mpsc::channel(4);
        a.enqueue(info("x", "general", 0, 1), tx).unwrap();
        let old = row("a", 3, &a);
        b.remote_event(note("a", 3, DeskEvent::Waiting(info("x", "general", 0, 1))));
        b.remote_event(note(
            "a",
            4,
            DeskEvent::Taken {
                call_id: "x".into(),
                agent: "alice".into(),
            },
        ));
        b.remote_rows(vec![old]);
        let sup = viewer("sue", true);
        let snap = b.snapshot(&sup);
        assert!(snap.waiting.is_empty(), "{snap:?}");
        assert_eq!(snap.talking[0].1, "alice");
        b.remote_event(note(
            "a",
            5,
            DeskEvent::Line {
                call_id: "x".into(),
                speaker: "caller".into(),
                text: "hello".into(),
            },
        ));
        b.remote_event(note(
            "a",
            6,
            DeskEvent::Ended {
                call_id: "x".into(),
            },
        ));
        assert!(b.snapshot(&sup).talking.is_empty());
        let mut kinds = Vec::new();
        while let Ok(e) = feed.try_recv() {
            kinds.push(serde_json::to_value(&*e).unwrap()["type"].clone());
        }
        assert_eq!(kinds, ["waiting", "taken", "line", "ended"]);
    }

    #[test]
    fn payloads_fit_notify_and_long_lines_are_cut() {
        let long = "é".repeat(5_000);
        let p = payload(note(
            "a",
            1,
            DeskEvent::Line {
                call_id: "x".into(),
                speaker: "caller".into(),
                text: long,
            },
        ))
        .unwrap();
        assert!(p.len() <= MAX_PAYLOAD);
        let back: Note = serde_json::from_str(&p).unwrap();
        let DeskEvent::Line { text, .. } = back.event else {
            panic!()
        };
        assert_eq!(text.chars().count(), MAX_LINE);
        let mut w = info("x", "general", 0, 1);
        w.reason = "x".repeat(10_000);
        assert_eq!(payload(note("a", 1, DeskEvent::Waiting(w))), None);
    }

    #[test]
    fn legs_taken_for_other_nodes_are_remembered_newest_first_and_bounded() {
        let d = Desk::new(DeskConfig::default());
        for i in 0..LEGS + 10 {
            d.remember_leg(&format!("leg{i}"), "http://a");
        }
        assert_eq!(d.leg_owner("leg0"), None);
        assert_eq!(
            d.leg_owner(&format!("leg{}", LEGS + 9)).as_deref(),
            Some("http://a")
        );
    }
}
