//! The agent desk's queue: callers waiting for a human, the calls agents are
//! talking on, and the live feed (`DeskEvent`) the desk page shows.
//!
//! A call reaches the desk when its dialogue transfers it to `desk:QUEUE`
//! (on any transport): the call's pipeline puts the caller on hold and
//! enqueues itself here with a command channel. An agent who may serve the
//! queue takes it (first come wins; the entry moves to `talking`), and the
//! pipeline gets the agent's audio leg over that channel. The desk never
//! touches audio; it only decides who gets which caller.
//!
//! Everything is in memory and bounded: `max_waiting` callers, a broadcast
//! feed that drops old events for a page that falls behind (the page then
//! reloads the snapshot).
//!
//! Nodes sharing a PostgreSQL store see each other's desks ([`cluster`]):
//! each publishes its state and events, and keeps a mirror of the others'
//! (`remote`), so an agent on any node sees every caller and takes them
//! through the node that holds the call.

pub mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// Events kept for pages that read slowly; a page further behind reloads.
const FEED: usize = 1024;
/// 20 ms frames queued each way between a caller and an agent's leg before
/// frames are dropped: a slow leg must not build up delay.
pub const LEG_FRAMES: usize = 16;

/// `[desk]`: human agents taking calls in the browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskConfig {
    /// Serve `/desk` and take `desk:QUEUE` transfers.
    pub enabled: bool,
    /// Queue name → the people (sign-in names, role `agent`) who take its
    /// calls. A queue not listed is open to every agent; supervisors and
    /// admins may take from any queue.
    pub queues: BTreeMap<String, Vec<String>>,
    /// Callers waiting at once, over all queues; more are refused (the bot
    /// keeps them and says so).
    pub max_waiting: usize,
    /// Nobody took the call in this long: the bot takes the caller back.
    pub max_wait_s: u64,
    /// Put callers on hold only while someone who serves their queue has
    /// the desk open; otherwise the bot keeps them and says nobody is free
    /// (instead of minutes of hold music with nobody there).
    pub require_online: bool,
    /// Every this many seconds on hold the caller is thanked and told their
    /// place in the queue (0: music only).
    pub hold_reminder_s: u64,
}

impl Default for DeskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queues: BTreeMap::new(),
            max_waiting: 200,
            max_wait_s: 300,
            require_online: true,
            hold_reminder_s: 30,
        }
    }
}

/// A caller waiting, as the desk shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitingInfo {
    pub call_id: String,
    pub channel: String,
    pub queue: String,
    /// 0–100 from the routing rules.
    pub priority: i64,
    pub reason: String,
    pub since_unix_ms: u64,
}

/// A caller's voice for the agent, and the agent's for the caller: 20 ms
/// μ-law frames. The agent hung up when `from_agent` closes; the caller left
/// when `to_agent` closes.
pub struct AgentLeg {
    pub from_agent: mpsc::Receiver<Vec<u8>>,
    pub to_agent: mpsc::Sender<Vec<u8>>,
}

/// What the desk tells a waiting or bridged call.
pub enum ToCall {
    /// `agent` took the call at `asked`: bridge the caller to `leg`.
    Take {
        agent: String,
        leg: AgentLeg,
        asked: Instant,
    },
    /// The agent gives the caller back to the bot.
    Return,
    /// The agent passes the caller on to another queue.
    Requeue { queue: String },
}

/// The live feed of the desk page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeskEvent {
    Waiting(WaitingInfo),
    Taken {
        call_id: String,
        agent: String,
    },
    /// Left the queue or the agent: `why` is hung_up, returned, timed_out, ended.
    Left {
        call_id: String,
        why: String,
    },
    /// A bot call started (supervisors watch these).
    Started {
        call_id: String,
        channel: String,
    },
    Ended {
        call_id: String,
    },
    /// One line of a live transcript; digits asked for as secrets are masked
    /// before they get here.
    Line {
        call_id: String,
        speaker: String,
        text: String,
    },
}

/// Who is looking at the desk or acting on it.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    /// A supervisor or admin: every queue, every live call.
    pub all: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeskError {
    #[error("the desk is not taking calls")]
    Disabled,
    #[error("{0} callers are already waiting")]
    Full(usize),
    #[error("this caller is not waiting (taken, or gone)")]
    NotWaiting,
    #[error("this queue is not yours")]
    NotYourQueue,
    #[error("you are not on this call")]
    NotYourCall,
    #[error("nobody who serves queue {0} has the desk open")]
    NobodyOnline(String),
}

struct Waiting {
    info: WaitingInfo,
    tx: mpsc::Sender<ToCall>,
}

struct Talking {
    info: WaitingInfo,
    agent: String,
    tx: mpsc::Sender<ToCall>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<String, Waiting>,
    talking: HashMap<String, Talking>,
    /// Bot calls in progress, by id: their channel.
    live: BTreeMap<String, String>,
}

/// What the desk page loads first, then keeps up to date from the feed.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Highest priority first, then longest waiting.
    pub waiting: Vec<WaitingInfo>,
    /// (caller, agent) pairs talking now.
    pub talking: Vec<(WaitingInfo, String)>,
    /// Bot calls in progress (supervisors only).
    pub live: Vec<(String, String)>,
    /// Who has the desk open.
    pub online: Vec<String>,
}

pub struct Desk {
    cfg: DeskConfig,
    inner: Mutex<Inner>,
    feed: broadcast::Sender<Arc<DeskEvent>>,
    /// People with the desk open: name → (open pages, sees every queue).
    online: Mutex<HashMap<String, (usize, bool)>>,
    /// Other nodes' desks, by node id (see [`cluster`]).
    remote: Mutex<cluster::Mirror>,
    /// Where this node's own changes go to be published to the others
    /// (`None`: a presence change); set once a cluster link runs.
    outbound: std::sync::OnceLock<mpsc::Sender<Option<Arc<DeskEvent>>>>,
}

/// Someone has the desk open while this lives (their page's feed).
pub struct Presence {
    desk: Arc<Desk>,
    name: String,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut online = self.desk.online.lock();
        if let Some((n, _)) = online.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                online.remove(&self.name);
            }
        }
        drop(online);
        self.desk.changed(None);
    }
}

impl Desk {
    pub fn new(cfg: DeskConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            inner: Mutex::default(),
            feed: broadcast::channel(FEED).0,
            online: Mutex::default(),
            remote: Mutex::default(),
            outbound: std::sync::OnceLock::new(),
        })
    }

    /// `v` has the desk open until the returned guard is dropped.
    pub fn present(self: &Arc<Self>, v: &Viewer) -> Presence {
        let mut online = self.online.lock();
        let e = online.entry(v.name.clone()).or_insert((0, v.all));
        e.0 += 1;
        e.1 |= v.all;
        drop(online);
        self.changed(None);
        Presence {
            desk: self.clone(),
            name: v.name.clone(),
        }
    }

    /// Who has the desk open, by name, on any node.
    pub fn online(&self) -> Vec<String> {
        let mut names: Vec<String> = self.online.lock().keys().cloned().collect();
        names.extend(self.remote.lock().online().into_iter().map(|(n, _)| n));
        names.sort();
        names.dedup();
        names
    }

    /// Who has the desk open on this node, and whether they see every queue.
    fn online_here(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = self
            .online
            .lock()
            .iter()
            .map(|(n, (_, all))| (n.clone(), *all))
            .collect();
        v.sort();
        v
    }

    /// Whether anyone who may take `queue`'s callers has the desk open, on
    /// this node or another.
    fn someone_serves(&self, queue: &str) -> bool {
        let mut online = self.online_here();
        online.extend(self.remote.lock().online());
        online
            .into_iter()
            .any(|(name, all)| self.may_serve(&Viewer { name, all }, queue))
    }

    pub fn config(&self) -> &DeskConfig {
        &self.cfg
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DeskEvent>> {
        self.feed.subscribe()
    }

    fn publish(&self, e: DeskEvent) {
        let e = Arc::new(e);
        self.changed(Some(e.clone()));
        // No page listening is fine.
        let _ = self.feed.send(e);
    }

    /// Tells the other nodes (when linked): an event, or `None` when only
    /// who is online changed. Dropped when the link is behind: the link
    /// writes the whole state every second anyway.
    fn changed(&self, e: Option<Arc<DeskEvent>>) {
        if let Some(tx) = self.outbound.get() {
            let _ = tx.try_send(e);
        }
    }

    /// Whether `v` may take (and see) callers of `queue`.
    pub fn may_serve(&self, v: &Viewer, queue: &str) -> bool {
        v.all
            || self
                .cfg
                .queues
                .get(queue)
                .is_none_or(|names| names.iter().any(|n| n == &v.name))
    }

    /// Whether `v` may see call `id`'s events: supervisors see every call,
    /// agents the callers of their queues and their own calls.
    pub fn may_see(&self, v: &Viewer, id: &str) -> bool {
        if v.all {
            return true;
        }
        let local = {
            let inner = self.inner.lock();
            inner
                .waiting
                .get(id)
                .is_some_and(|w| self.may_serve(v, &w.info.queue))
                || inner.talking.get(id).is_some_and(|t| t.agent == v.name)
        };
        local || {
            let remote = self.remote.lock();
            remote
                .waiting(id)
                .is_some_and(|w| self.may_serve(v, &w.queue))
                || remote
                    .talking(id)
                    .is_some_and(|(_, agent)| *agent == v.name)
        }
    }

    /// Whether event `e` is for `v`'s page.
    pub fn shows(&self, v: &Viewer, e: &DeskEvent) -> bool {
        match e {
            DeskEvent::Waiting(w) => self.may_serve(v, &w.queue),
            DeskEvent::Started { .. } | DeskEvent::Ended { .. } => v.all,
            // Sent when the call is no longer waiting: agents' pages drop
            // the card by id, so telling them is harmless.
            DeskEvent::Taken { .. } | DeskEvent::Left { .. } => true,
            DeskEvent::Line { call_id, .. } => self.may_see(v, call_id),
        }
    }

    /// Where waiting call `id` stands in its queue (1: next to be taken,
    /// unless a higher-priority caller arrives).
    /// Callers waiting on other nodes count too.
    pub fn position(&self, id: &str) -> Option<usize> {
        let (me, mut all): (WaitingInfo, Vec<WaitingInfo>) = {
            let inner = self.inner.lock();
            let me = inner.waiting.get(id)?.info.clone();
            (me, inner.waiting.values().map(|w| w.info.clone()).collect())
        };
        all.extend(self.remote.lock().all_waiting());
        let ahead = all
            .iter()
            .filter(|w| w.queue == me.queue && w.call_id != me.call_id)
            .filter(|w| {
                w.priority > me.priority
                    || (w.priority == me.priority && w.since_unix_ms < me.since_unix_ms)
            })
            .count();
        Some(ahead + 1)
    }

    /// A caller goes on hold in `info.queue`.
    pub fn enqueue(&self, info: WaitingInfo, tx: mpsc::Sender<ToCall>) -> Result<(), DeskError> {
        if !self.cfg.enabled {
            return Err(DeskError::Disabled);
        }
        if self.cfg.require_online && !self.someone_serves(&info.queue) {
            return Err(DeskError::NobodyOnline(info.queue));
        }
        {
            let mut inner = self.inner.lock();
            if inner.waiting.len() >= self.cfg.max_waiting {
                return Err(DeskError::Full(inner.waiting.len()));
            }
            inner.talking.remove(&info.call_id);
            inner.waiting.insert(
                info.call_id.clone(),
                Waiting {
                    info: info.clone(),
                    tx,
                },
            );
        }
        self.publish(DeskEvent::Waiting(info));
        Ok(())
    }

    /// `v` takes waiting call `id`: the caller is theirs (nobody else can
    /// take it); returns the channel to the call and what it waited as.
    pub fn take(
        &self,
        v: &Viewer,
        id: &str,
    ) -> Result<(mpsc::Sender<ToCall>, WaitingInfo), DeskError> {
        let mut inner = self.inner.lock();
        let w = inner.waiting.get(id).ok_or(DeskError::NotWaiting)?;
        if !self.may_serve(v, &w.info.queue) {
            return Err(DeskError::NotYourQueue);
        }
        // A call whose pipeline has gone cannot be taken.
        if w.tx.is_closed() {
            inner.waiting.remove(id);
            return Err(DeskError::NotWaiting);
        }
        let w = inner.waiting.remove(id).ok_or(DeskError::NotWaiting)?;
        inner.talking.insert(
            id.to_string(),
            Talking {
                info: w.info.clone(),
                agent: v.name.clone(),
                tx: w.tx.clone(),
            },
        );
        drop(inner);
        self.publish(DeskEvent::Taken {
            call_id: id.to_string(),
            agent: v.name.clone(),
        });
        Ok((w.tx, w.info))
    }

    /// The agent on call `id` (or a supervisor) sends it `cmd`.
    pub fn command(&self, v: &Viewer, id: &str, cmd: ToCall) -> Result<(), DeskError> {
        let tx = {
            let inner = self.inner.lock();
            let t = inner.talking.get(id).ok_or(DeskError::NotYourCall)?;
            if !(v.all || t.agent == v.name) {
                return Err(DeskError::NotYourCall);
            }
            t.tx.clone()
        };
        // Control never drops: the call reads this channel at once.
        tx.try_send(cmd).map_err(|_| DeskError::NotYourCall)
    }

    /// A take that could not go ahead (the agent's leg failed): the caller
    /// waits again, first in line as before.
    pub fn untake(&self, id: &str) {
        let info = {
            let mut inner = self.inner.lock();
            let Some(t) = inner.talking.remove(id) else {
                return;
            };
            let info = t.info.clone();
            inner.waiting.insert(
                id.to_string(),
                Waiting {
                    info: t.info,
                    tx: t.tx,
                },
            );
            info
        };
        self.publish(DeskEvent::Waiting(info));
    }

    /// Call `id` is no longer waiting nor with an agent (`why`).
    pub fn leave(&self, id: &str, why: &str) {
        let had = {
            let mut inner = self.inner.lock();
            inner.waiting.remove(id).is_some() | inner.talking.remove(id).is_some()
        };
        if had {
            self.publish(DeskEvent::Left {
                call_id: id.to_string(),
                why: why.to_string(),
            });
        }
    }

    pub fn call_started(&self, id: &str, channel: &str) {
        self.inner
            .lock()
            .live
            .insert(id.to_string(), channel.to_string());
        self.publish(DeskEvent::Started {
            call_id: id.to_string(),
            channel: channel.to_string(),
        });
    }

    pub fn call_ended(&self, id: &str) {
        self.leave(id, "ended");
        self.inner.lock().live.remove(id);
        self.publish(DeskEvent::Ended {
            call_id: id.to_string(),
        });
    }

    pub fn line(&self, id: &str, speaker: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        self.publish(DeskEvent::Line {
            call_id: id.to_string(),
            speaker: speaker.to_string(),
            text: text.to_string(),
        });
    }

    /// This node's own part of the desk, as the other nodes mirror it.
    pub fn local_state(&self) -> cluster::NodeState {
        let inner = self.inner.lock();
        let mut st = cluster::NodeState {
            waiting: inner.waiting.values().map(|w| w.info.clone()).collect(),
            talking: inner
                .talking
                .values()
                .map(|t| (t.info.clone(), t.agent.clone()))
                .collect(),
            live: inner
                .live
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            online: Vec::new(),
        };
        drop(inner);
        st.waiting.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        st.talking.sort_by(|a, b| a.0.call_id.cmp(&b.0.call_id));
        st.online = self.online_here();
        st
    }

    /// What `v`'s page starts from: this node's callers and calls and every
    /// other node's.
    pub fn snapshot(&self, v: &Viewer) -> Snapshot {
        let mut all = self.local_state();
        self.remote.lock().extend_into(&mut all);
        let mut waiting: Vec<WaitingInfo> = all
            .waiting
            .into_iter()
            .filter(|w| self.may_serve(v, &w.queue))
            .collect();
        waiting.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.since_unix_ms.cmp(&b.since_unix_ms))
        });
        let talking = all
            .talking
            .into_iter()
            .filter(|(_, agent)| v.all || *agent == v.name)
            .collect();
        let live = if v.all { all.live } else { Vec::new() };
        Snapshot {
            waiting,
            talking,
            live,
            online: self.online(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A caller waiting in `queue` (a test's).
    pub(crate) fn info(id: &str, queue: &str, priority: i64, since: u64) -> WaitingInfo {
        WaitingInfo {
            call_id: id.into(),
            channel: "sip".into(),
            queue: queue.into(),
            priority,
            reason: "asked for a person".into(),
            since_unix_ms: since,
        }
    }

    fn agent(name: &str) -> Viewer {
        Viewer {
            name: name.into(),
            all: false,
        }
    }

    fn desk() -> Arc<Desk> {
        let mut cfg = DeskConfig {
            max_waiting: 3,
            require_online: false,
            ..Default::default()
        };
        cfg.queues.insert("loans".into(), vec!["bea".into()]);
        Desk::new(cfg)
    }

    #[test]
    fn queue_order_is_priority_then_arrival_and_each_agent_sees_their_queues() {
        let d = desk();
        let (tx, _rx) = mpsc::channel(4);
        d.enqueue(info("a", "general", 10, 100), tx.clone())
            .unwrap();
        d.enqueue(info("b", "general", 90, 300), tx.clone())
            .unwrap();
        d.enqueue(info("c", "loans", 90, 200), tx.clone()).unwrap();
        let order = |v: &Viewer| -> Vec<String> {
            d.snapshot(v)
                .waiting
                .into_iter()
                .map(|w| w.call_id)
                .collect()
        };
        // Loans is bea's only; general is everyone's.
        assert_eq!(order(&agent("bea")), ["c", "b", "a"]);
        assert_eq!(order(&agent("al")), ["b", "a"]);
        let sup = Viewer {
            name: "sue".into(),
            all: true,
        };
        assert_eq!(order(&sup), ["c", "b", "a"]);
        // Places within each queue: b before a in general, c alone in loans.
        assert_eq!(
            ["a", "b", "c"].map(|id| d.position(id)),
            [Some(2), Some(1), Some(1)]
        );
        assert_eq!(d.position("nobody"), None);
        // Full: a fourth caller is refused, not queued.
        assert_eq!(
            d.enqueue(info("d", "general", 0, 400), tx),
            Err(DeskError::Full(3))
        );
    }

    #[test]
    fn a_caller_is_taken_once_and_only_by_someone_serving_the_queue() {
        let d = desk();
        let (tx, _rx) = mpsc::channel(4);
        d.enqueue(info("c", "loans", 50, 1), tx).unwrap();
        assert_eq!(
            d.take(&agent("al"), "c").unwrap_err(),
            DeskError::NotYourQueue
        );
        let (_, got) = d.take(&agent("bea"), "c").unwrap();
        assert_eq!(got.queue, "loans");
        assert_eq!(
            d.take(&agent("bea"), "c").unwrap_err(),
            DeskError::NotWaiting
        );
        // Only bea (or a supervisor) acts on the call now.
        assert_eq!(
            d.command(&agent("al"), "c", ToCall::Return).unwrap_err(),
            DeskError::NotYourCall
        );
        assert!(d.command(&agent("bea"), "c", ToCall::Return).is_ok());
        assert!(d.may_see(&agent("bea"), "c"));
        assert!(!d.may_see(&agent("al"), "c"));
    }

    #[test]
    fn a_failed_take_puts_the_caller_back_and_a_gone_call_cannot_be_taken() {
        let d = desk();
        let (tx, rx) = mpsc::channel(4);
        d.enqueue(info("a", "general", 0, 1), tx).unwrap();
        d.take(&agent("al"), "a").unwrap();
        d.untake("a");
        assert_eq!(d.snapshot(&agent("al")).waiting.len(), 1);
        drop(rx);
        assert_eq!(
            d.take(&agent("al"), "a").unwrap_err(),
            DeskError::NotWaiting
        );
        assert!(d.snapshot(&agent("al")).waiting.is_empty());
    }

    #[test]
    fn the_feed_tells_pages_what_changed_and_filters_by_viewer() {
        let d = desk();
        let mut feed = d.subscribe();
        let (tx, _rx) = mpsc::channel(4);
        d.call_started("c", "twilio");
        d.line("c", "caller", "I want a loan");
        d.enqueue(info("c", "loans", 50, 1), tx).unwrap();
        d.leave("c", "hung_up");
        d.call_ended("c");
        let mut kinds = Vec::new();
        while let Ok(e) = feed.try_recv() {
            kinds.push(serde_json::to_value(&*e).unwrap()["type"].clone());
        }
        assert_eq!(kinds, ["started", "line", "waiting", "left", "ended"]);
        let al = agent("al");
        assert!(!d.shows(&al, &DeskEvent::Waiting(info("x", "loans", 0, 0))));
        assert!(d.shows(&agent("bea"), &DeskEvent::Waiting(info("x", "loans", 0, 0))));
        assert!(!d.shows(
            &al,
            &DeskEvent::Started {
                call_id: "x".into(),
                channel: "sip".into()
            }
        ));
    }

    #[test]
    fn callers_wait_only_while_someone_serving_their_queue_has_the_desk_open() {
        let mut cfg = DeskConfig::default();
        cfg.queues.insert("loans".into(), vec!["bea".into()]);
        let d = Desk::new(cfg);
        let (tx, _rx) = mpsc::channel(4);
        let nobody = d.enqueue(info("a", "loans", 0, 1), tx.clone());
        assert_eq!(nobody, Err(DeskError::NobodyOnline("loans".into())));
        // Al is online but does not serve loans; bea does, on two pages.
        let _al = d.present(&agent("al"));
        assert!(d.enqueue(info("a", "loans", 0, 1), tx.clone()).is_err());
        let bea1 = d.present(&agent("bea"));
        let bea2 = d.present(&agent("bea"));
        assert_eq!(d.online(), ["al", "bea"]);
        assert!(d.enqueue(info("a", "loans", 0, 1), tx.clone()).is_ok());
        drop(bea1);
        assert!(d.enqueue(info("b", "loans", 0, 2), tx.clone()).is_ok());
        drop(bea2);
        assert_eq!(d.online(), ["al"]);
        assert!(d.enqueue(info("c", "loans", 0, 3), tx).is_err());
    }
}
