//! API tokens, people and their sign-in sessions. Only hashes are stored;
//! what a hash means (SHA-256 of a random token, argon2id of a password) is
//! the server's business (`server::auth`).

use sqlx::Row;

use super::{now_ms, Result, Store};

/// One API token's public face (never its value or hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub created_ms: i64,
    pub last_used_ms: i64,
    pub revoked: bool,
}

impl Store {
    pub async fn token_count(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE revoked = 0")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    /// Adds a token, or replaces the one of that name (rotation).
    pub async fn put_token(&self, name: &str, role: &str, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM api_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO api_tokens (name, role, token_hash, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(role)
        .bind(token_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The role of a live token with this hash; marks it used.
    pub async fn token_role(&self, token_hash: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT name, role FROM api_tokens WHERE token_hash = $1 AND revoked = 0")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let name: String = row.try_get("name")?;
        sqlx::query("UPDATE api_tokens SET last_used_ms = $1 WHERE name = $2")
            .bind(now_ms())
            .bind(&name)
            .execute(&self.pool)
            .await?;
        Ok(Some(row.try_get("role")?))
    }

    pub async fn revoke_token(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE name = $1 AND revoked = 0")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    name: r.try_get("name")?,
                    role: r.try_get("role")?,
                    created_ms: r.try_get("created_ms")?,
                    last_used_ms: r.try_get("last_used_ms")?,
                    revoked: r.try_get::<i64, _>("revoked")? != 0,
                })
            })
            .collect()
    }

    /// Adds a person, or replaces their role and password.
    pub async fn put_user(&self, name: &str, role: &str, password_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE user_name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(role, password_hash)` of an enabled person.
    pub async fn user(&self, name: &str) -> Result<Option<(String, String)>> {
        let row =
            sqlx::query("SELECT role, password_hash FROM users WHERE name = $1 AND disabled = 0")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((r.try_get("role")?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn open_session(
        &self,
        token_hash: &str,
        user: &str,
        role: &str,
        expires_ms: i64,
    ) -> Result<()> {
        // Expired sessions go whenever a new one starts.
        sqlx::query("DELETE FROM sessions WHERE expires_ms < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, role, expires_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(role)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(user, role)` of an unexpired session.
    pub async fn session(&self, token_hash: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT user_name, role FROM sessions WHERE token_hash = $1 AND expires_ms > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("user_name")?, r.try_get("role")?)))
            .transpose()
    }

    pub async fn close_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
