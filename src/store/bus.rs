//! What nodes sharing a PostgreSQL store tell each other while calls are
//! live: each node's agent-desk state (a row per node, `desk_nodes`) and a
//! `LISTEN/NOTIFY` channel for changes as they happen. On SQLite (one node)
//! there is nobody to tell: the rows are still written, notifications are
//! not sent, and no listener is opened.

use sqlx::postgres::PgListener;
use sqlx::Row;

use super::{Result, Store};

/// A node's row in `desk_nodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node: String,
    /// Where the other nodes reach its HTTP API.
    pub url: String,
    pub version: i64,
    /// The node's desk state, JSON.
    pub state: String,
}

impl Store {
    /// Whether other nodes may share this store (PostgreSQL): live state is
    /// worth publishing and listening for.
    pub fn is_shared(&self) -> bool {
        self.url_kind == "postgres"
    }

    /// Writes this node's desk row (newer `version`s only win).
    pub async fn put_node_row(&self, row: &NodeRow, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO desk_nodes (node, url, version, state, seen_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node) DO UPDATE SET url = excluded.url, version = excluded.version, \
             state = excluded.state, seen_ms = excluded.seen_ms \
             WHERE desk_nodes.version <= excluded.version",
        )
        .bind(&row.node)
        .bind(&row.url)
        .bind(row.version)
        .bind(&row.state)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The rows written since `fresh_since` (live nodes), but `except`'s.
    pub async fn node_rows(&self, fresh_since: i64, except: &str) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT node, url, version, state FROM desk_nodes \
             WHERE seen_ms >= $1 AND node <> $2 ORDER BY node",
        )
        .bind(fresh_since)
        .bind(except)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    node: r.try_get("node")?,
                    url: r.try_get("url")?,
                    version: r.try_get("version")?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }

    /// This node is leaving (or long dead): its row goes, and rows nobody
    /// refreshed since `stale_before` with it.
    pub async fn drop_node_rows(&self, node: &str, stale_before: i64) -> Result<()> {
        sqlx::query("DELETE FROM desk_nodes WHERE node = $1 OR seen_ms < $2")
            .bind(node)
            .bind(stale_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tells every node listening on `channel` (PostgreSQL `NOTIFY`; payloads
    /// stay under its 8,000-byte limit). Nothing to do on SQLite.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if !self.is_shared() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A connection listening on `channel` (PostgreSQL only; it reconnects
    /// by itself, and what was sent while it was down is lost — the rows are
    /// there to catch up from).
    pub async fn listen(&self, channel: &str) -> Result<Option<PgListener>> {
        let Some(url) = self.shared_url.as_deref() else {
            return Ok(None);
        };
        let mut l = PgListener::connect(url).await?;
        l.listen(channel).await?;
        Ok(Some(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, version: i64, state: &str) -> NodeRow {
        NodeRow {
            node: node.into(),
            url: format!("http://{node}"),
            version,
            state: state.into(),
        }
    }

    /// Rows keep the newest version, dead nodes' rows are left out and
    /// dropped, and (PostgreSQL) a notification reaches a listener.
    #[tokio::test]
    async fn node_rows_keep_the_newest_and_notifications_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::env::var("DATABASE_URL").unwrap_or_default();
        let url = crate::store::scratch_url_on(&base, dir.path())
            .await
            .unwrap();
        let s = Store::open(&url).await.unwrap();
        s.put_node_row(&row("a", 2, "{\"n\":2}"), 1_000)
            .await
            .unwrap();
        // An older write arriving late does not undo a newer one.
        s.put_node_row(&row("a", 1, "{\"n\":1}"), 1_100)
            .await
            .unwrap();
        s.put_node_row(&row("b", 7, "{}"), 500).await.unwrap();
        s.put_node_row(&row("me", 1, "{}"), 1_000).await.unwrap();
        let fresh = s.node_rows(900, "me").await.unwrap();
        assert_eq!(fresh, vec![row("a", 2, "{\"n\":2}")]);
        s.drop_node_rows("a", 900).await.unwrap();
        assert!(s.node_rows(0, "me").await.unwrap().is_empty());
        assert_eq!(s.node_rows(0, "").await.unwrap().len(), 1);

        let Some(mut l) = s.listen("attendant_test").await.unwrap() else {
            assert!(!s.is_shared());
            s.notify("attendant_test", "nobody hears").await.unwrap();
            return;
        };
        s.notify("attendant_test", "{\"hello\":1}").await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), l.recv())
            .await
            .expect("a notification within 5 s")
            .unwrap();
        assert_eq!(n.channel(), "attendant_test");
        assert_eq!(n.payload(), "{\"hello\":1}");
    }
}
