//! The database: one set of queries for SQLite and PostgreSQL.
//!
//! Every statement is one SQL text that both backends accept, run through
//! sqlx's `Any` driver: `$1`-style placeholders (SQLite reads them as
//! numbered parameters), only `TEXT` and `BIGINT` columns (times are unix
//! milliseconds, flags 0/1, ids random hex), `ON CONFLICT` and `RETURNING`
//! where needed. Migrations live in `control-plane/migrations/`, are
//! embedded in the binary and versioned by sqlx's migration table; the same
//! files run on both backends.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Which backend a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL names a backend other than SQLite or PostgreSQL.
    #[error("unsupported database url scheme in {0:?} (use sqlite:// or postgres://)")]
    Scheme(String),
    /// A unique constraint was violated (a duplicate name, for example).
    #[error("duplicate")]
    Duplicate,
    /// The driver reported an error.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not have the expected form.
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// The backend cannot do what was asked.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

fn classify(e: sqlx::Error) -> DbError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Duplicate,
        _ => DbError::Sqlx(e),
    }
}

type Result<T> = std::result::Result<T, DbError>;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random id: `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    jam_transport::relay::hex_encode(&b)
}

/// A user account.
#[derive(Debug, Clone)]
pub struct User {
    /// Random id.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// May create invites and see every session on the dashboard.
    pub is_admin: bool,
}

/// A device public key registered by a user.
#[derive(Debug, Clone)]
pub struct Device {
    /// Random id.
    pub id: String,
    /// The user's name for it ("laptop").
    pub name: String,
    /// X25519 public key, 64 hex digits.
    pub public_key: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A session's row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// 16 hex digits (the relay's u64 session id).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Owner's user id.
    pub owner_id: String,
    /// Owner's username.
    pub owner: String,
    /// Listed publicly.
    pub is_public: bool,
    /// Argon2id hash of the join password, if any.
    pub password_hash: Option<String>,
    /// Only invited users may join.
    pub invite_only: bool,
    /// The relay address members use.
    pub relay_addr: String,
    /// The relay node that hosts it.
    pub node: String,
    /// Unix ms.
    pub created_at: i64,
    /// Number of members.
    pub members: i64,
}

/// A member of a session as the API shows it.
#[derive(Debug, Clone)]
pub struct MemberRow {
    /// Member id on the relay.
    pub member_id: u32,
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// The device key the member joined with, if any.
    pub public_key: Option<String>,
    /// The address the relay saw its hello from.
    pub observed_addr: Option<String>,
    /// Addresses the member reported (comma separated).
    pub reported_addrs: String,
    /// Unix ms.
    pub joined_at: i64,
    /// Unix ms of the hello by which it went live on the session's relay,
    /// `None` while it is offline there (written by the node hosting the
    /// session, read by the others).
    pub online_since: Option<i64>,
}

/// A blob and its newest version.
#[derive(Debug, Clone)]
pub struct BlobRow {
    /// Random id.
    pub id: String,
    /// Owner's user id.
    pub owner_id: String,
    /// Owner's username.
    pub owner: String,
    /// File name given at upload.
    pub name: String,
    /// `agent`, `scp` or `other`.
    pub kind: String,
    /// Unix ms.
    pub created_at: i64,
}

/// One stored version of a blob.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// 1, 2, ...
    pub version: i64,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Unix ms.
    pub created_at: i64,
}

/// The database handle (a connection pool).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`), creating a
    /// SQLite file if missing, and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(DbError::Scheme(url.chars().take(20).collect()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers (the dashboard) run while a writer commits.
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Db { pool, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The relay server secret, created on first use. Every node that
    /// shares this database reads the same one.
    pub async fn server_secret(&self) -> Result<[u8; 32]> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ('relay_secret', $1) ON CONFLICT (key) DO NOTHING")
            .bind(random_hex(32))
            .execute(&self.pool)
            .await?;
        let v: String = sqlx::query("SELECT value FROM meta WHERE key = 'relay_secret'")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let mut out = [0u8; 32];
        jam_transport::relay::hex_decode(&v, &mut out)
            .ok_or(DbError::Corrupt("meta.relay_secret"))?;
        Ok(out)
    }

    // ----- users and tokens -----

    /// Creates a user; [`DbError::Duplicate`] if the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<User> {
        let id = random_hex(16);
        sqlx::query("INSERT INTO users (id, username, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(username)
            .bind(password_hash)
            .bind(i64::from(is_admin))
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(User {
            id,
            username: username.to_string(),
            password_hash: password_hash.to_string(),
            is_admin,
        })
    }

    fn user_from(row: &AnyRow) -> Result<User> {
        Ok(User {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            password_hash: row.try_get("password_hash")?,
            is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        })
    }

    /// The user with this name.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        sqlx::query("SELECT id, username, password_hash, is_admin FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::user_from)
            .transpose()
    }

    /// Number of users.
    pub async fn user_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    /// Stores a token hash for `user_id` until `expires_at` (unix ms).
    pub async fn insert_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now_ms())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user a token hash belongs to, if it exists and has not expired.
    pub async fn user_for_token(&self, token_hash: &str, now: i64) -> Result<Option<User>> {
        sqlx::query(
            "SELECT u.id, u.username, u.password_hash, u.is_admin FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(Self::user_from)
        .transpose()
    }

    /// Deletes one token.
    pub async fn delete_token(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes expired tokens and used-up or expired invites.
    pub async fn purge_expired(&self, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM invites WHERE expires_at <= $1 OR uses_left <= 0")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores an invite code hash.
    pub async fn insert_invite(
        &self,
        code_hash: &str,
        created_by: Option<&str>,
        uses: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO invites (code_hash, created_by, uses_left, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(code_hash)
            .bind(created_by)
            .bind(uses)
            .bind(expires_at)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Uses up one use of an invite; false if it does not exist, expired or
    /// is used up.
    pub async fn consume_invite(&self, code_hash: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE invites SET uses_left = uses_left - 1 WHERE code_hash = $1 AND uses_left > 0 AND expires_at > $2",
        )
        .bind(code_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives one use back (when account creation failed after consuming).
    pub async fn restore_invite(&self, code_hash: &str) -> Result<()> {
        sqlx::query("UPDATE invites SET uses_left = uses_left + 1 WHERE code_hash = $1")
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ----- devices -----

    fn device_from(row: &AnyRow) -> Result<Device> {
        Ok(Device {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            public_key: row.try_get("public_key")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Registers a device key; [`DbError::Duplicate`] if the user already
    /// registered this key.
    pub async fn add_device(&self, user_id: &str, name: &str, public_key: &str) -> Result<Device> {
        let d = Device {
            id: random_hex(16),
            name: name.to_string(),
            public_key: public_key.to_string(),
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO devices (id, user_id, name, public_key, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&d.id)
            .bind(user_id)
            .bind(&d.name)
            .bind(&d.public_key)
            .bind(d.created_at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(d)
    }

    /// A user's devices, oldest first.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        sqlx::query("SELECT id, name, public_key, created_at FROM devices WHERE user_id = $1 ORDER BY created_at, id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::device_from)
            .collect()
    }

    /// Deletes a device of a user; false if there was none.
    pub async fn delete_device(&self, user_id: &str, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    // ----- sessions -----

    const SESSION_COLS: &'static str = "s.id, s.name, s.owner_id, u.username AS owner, s.is_public, s.password_hash, \
        s.invite_only, s.relay_addr, s.node, s.created_at, \
        (SELECT COUNT(*) FROM members m WHERE m.session_id = s.id) AS members";

    fn session_from(row: &AnyRow) -> Result<SessionRow> {
        Ok(SessionRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            owner_id: row.try_get("owner_id")?,
            owner: row.try_get("owner")?,
            is_public: row.try_get::<i64, _>("is_public")? != 0,
            password_hash: row.try_get("password_hash")?,
            invite_only: row.try_get::<i64, _>("invite_only")? != 0,
            relay_addr: row.try_get("relay_addr")?,
            node: row.try_get("node")?,
            created_at: row.try_get("created_at")?,
            members: row.try_get("members")?,
        })
    }

    /// Creates a session; [`DbError::Duplicate`] if the name is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_session(
        &self,
        id: &str,
        name: &str,
        owner_id: &str,
        is_public: bool,
        password_hash: Option<&str>,
        invite_only: bool,
        relay_addr: &str,
        node: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, name, owner_id, is_public, password_hash, invite_only, relay_addr, node, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(name)
        .bind(owner_id)
        .bind(i64::from(is_public))
        .bind(password_hash)
        .bind(i64::from(invite_only))
        .bind(relay_addr)
        .bind(node)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Public sessions, plus the ones `user_id` owns or belongs to.
    pub async fn visible_sessions(&self, user_id: Option<&str>) -> Result<Vec<SessionRow>> {
        let q = format!(
            "SELECT {} FROM sessions s JOIN users u ON u.id = s.owner_id \
             WHERE s.is_public = 1 OR s.owner_id = $1 \
             OR EXISTS (SELECT 1 FROM members m WHERE m.session_id = s.id AND m.user_id = $1) \
             ORDER BY s.created_at, s.id",
            Self::SESSION_COLS
        );
        sqlx::query(&q)
            .bind(user_id.unwrap_or(""))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::session_from)
            .collect()
    }

    /// Every session (for the admin's dashboard).
    pub async fn all_sessions(&self) -> Result<Vec<SessionRow>> {
        let q = format!(
            "SELECT {} FROM sessions s JOIN users u ON u.id = s.owner_id ORDER BY s.created_at, s.id",
            Self::SESSION_COLS
        );
        sqlx::query(&q)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Self::session_from)
            .collect()
    }

    /// The session with this id.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        let q = format!(
            "SELECT {} FROM sessions s JOIN users u ON u.id = s.owner_id WHERE s.id = $1",
            Self::SESSION_COLS
        );
        sqlx::query(&q)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::session_from)
            .transpose()
    }

    /// The session with this name.
    pub async fn session_by_name(&self, name: &str) -> Result<Option<SessionRow>> {
        let q = format!(
            "SELECT {} FROM sessions s JOIN users u ON u.id = s.owner_id WHERE s.name = $1",
            Self::SESSION_COLS
        );
        sqlx::query(&q)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(Self::session_from)
            .transpose()
    }

    /// Deletes a session (members, invites go with it).
    pub async fn delete_session(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Lets `user_id` join an invite-only session.
    pub async fn invite_to_session(&self, session_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("INSERT INTO session_invites (session_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(session_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether `user_id` was invited to the session.
    pub async fn is_invited(&self, session_id: &str, user_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM session_invites WHERE session_id = $1 AND user_id = $2")
                .bind(session_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    // ----- members -----

    /// The member id of `user_id` in the session, if a member.
    pub async fn member_id(&self, session_id: &str, user_id: &str) -> Result<Option<u32>> {
        let row =
            sqlx::query("SELECT member_id FROM members WHERE session_id = $1 AND user_id = $2")
                .bind(session_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let v: i64 = r.try_get(0)?;
            u32::try_from(v).map_err(|_| DbError::Corrupt("members.member_id"))
        })
        .transpose()
    }

    /// Adds a member with a fresh random member id; returns it. Returns the
    /// existing id if the user is already a member.
    pub async fn add_member(
        &self,
        session_id: &str,
        user_id: &str,
        device_id: Option<&str>,
    ) -> Result<u32> {
        for _ in 0..8 {
            if let Some(id) = self.member_id(session_id, user_id).await? {
                return Ok(id);
            }
            let member_id = loop {
                let id: u32 = rand::rng().next_u32();
                if id != jam_transport::relay::ALL_MEMBERS {
                    break id;
                }
            };
            let r = sqlx::query(
                "INSERT INTO members (session_id, member_id, user_id, device_id, joined_at, reported_addrs) \
                 VALUES ($1, $2, $3, $4, $5, '')",
            )
            .bind(session_id)
            .bind(i64::from(member_id))
            .bind(user_id)
            .bind(device_id)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(classify);
            match r {
                Ok(_) => return Ok(member_id),
                // Id collision or a concurrent join of the same user: look again.
                Err(DbError::Duplicate) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(DbError::Duplicate)
    }

    /// Removes a member; returns its member id if it was one.
    pub async fn remove_member(&self, session_id: &str, user_id: &str) -> Result<Option<u32>> {
        let id = self.member_id(session_id, user_id).await?;
        sqlx::query("DELETE FROM members WHERE session_id = $1 AND user_id = $2")
            .bind(session_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// The members of a session with their device keys and addresses.
    /// `online_since` is as the hosting node recorded it while that node is
    /// alive ([`Db::beat`]), and `None` once it is past its deadline.
    pub async fn members(&self, session_id: &str) -> Result<Vec<MemberRow>> {
        sqlx::query(
            "SELECT m.member_id, m.user_id, u.username, d.public_key, m.observed_addr, m.reported_addrs, m.joined_at, \
             CASE WHEN n.alive_until > $2 THEN m.online_since ELSE NULL END AS online_since \
             FROM members m JOIN users u ON u.id = m.user_id LEFT JOIN devices d ON d.id = m.device_id \
             JOIN sessions s ON s.id = m.session_id LEFT JOIN nodes n ON n.name = s.node \
             WHERE m.session_id = $1 ORDER BY m.joined_at, m.member_id",
        )
        .bind(session_id)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(MemberRow {
                member_id: u32::try_from(r.try_get::<i64, _>("member_id")?)
                    .map_err(|_| DbError::Corrupt("members.member_id"))?,
                user_id: r.try_get("user_id")?,
                username: r.try_get("username")?,
                public_key: r.try_get("public_key")?,
                observed_addr: r.try_get("observed_addr")?,
                reported_addrs: r.try_get("reported_addrs")?,
                joined_at: r.try_get("joined_at")?,
                online_since: r.try_get("online_since")?,
            })
        })
        .collect()
    }

    /// Records a member's hello on this node's relay: the addresses the
    /// relay learned and since when (unix ms) the member is live.
    pub async fn set_member_online(
        &self,
        session_id: &str,
        member_id: u32,
        observed: &str,
        reported: &str,
        since_ms: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE members SET observed_addr = $1, reported_addrs = $2, online_since = $3 WHERE session_id = $4 AND member_id = $5")
            .bind(observed)
            .bind(reported)
            .bind(since_ms)
            .bind(session_id)
            .bind(i64::from(member_id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a member is no longer live on this node's relay.
    pub async fn set_member_offline(&self, session_id: &str, member_id: u32) -> Result<()> {
        sqlx::query(
            "UPDATE members SET online_since = NULL WHERE session_id = $1 AND member_id = $2",
        )
        .bind(session_id)
        .bind(i64::from(member_id))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks every member of the sessions `node` hosts offline: its relay
    /// has just started (or stopped), so nobody is live there, whatever a
    /// node killed mid-session left in the database. Returns the ids of the
    /// sessions whose rows changed.
    pub async fn clear_presence(&self, node: &str) -> Result<Vec<String>> {
        sqlx::query(
            "UPDATE members SET online_since = NULL WHERE online_since IS NOT NULL \
             AND session_id IN (SELECT id FROM sessions WHERE node = $1) RETURNING session_id",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<String, _>("session_id")?))
        .collect::<Result<std::collections::BTreeSet<String>>>()
        .map(|ids| ids.into_iter().collect())
    }

    /// Records that `node` runs until `alive_until` (unix ms) at least; it
    /// pushes this forward at every membership sweep.
    pub async fn beat(&self, node: &str, alive_until: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (name, alive_until) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET alive_until = $2",
        )
        .bind(node)
        .bind(alive_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that `node` stopped.
    pub async fn forget_node(&self, node: &str) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE name = $1")
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The nodes alive now (deadline not passed), by name.
    pub async fn live_nodes(&self) -> Result<std::collections::BTreeSet<String>> {
        sqlx::query("SELECT name FROM nodes WHERE alive_until > $1")
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<String, _>("name")?))
            .collect()
    }

    /// Sends `payload` to every node listening on `channel` (PostgreSQL's
    /// `NOTIFY`, delivered when the statement commits). SQLite has no such
    /// channel: an error there.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Err(DbError::Unsupported("notifications need PostgreSQL"));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ----- blobs -----

    fn blob_from(r: &AnyRow) -> Result<BlobRow> {
        Ok(BlobRow {
            id: r.try_get("id")?,
            owner_id: r.try_get("owner_id")?,
            owner: r.try_get("owner")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            created_at: r.try_get("created_at")?,
        })
    }

    /// Creates a blob (without versions).
    pub async fn create_blob(
        &self,
        id: &str,
        owner_id: &str,
        name: &str,
        kind: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO blobs (id, owner_id, name, kind, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(owner_id)
        .bind(name)
        .bind(kind)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The blob with this id.
    pub async fn blob(&self, id: &str) -> Result<Option<BlobRow>> {
        sqlx::query(
            "SELECT b.id, b.owner_id, u.username AS owner, b.name, b.kind, b.created_at \
             FROM blobs b JOIN users u ON u.id = b.owner_id WHERE b.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(Self::blob_from)
        .transpose()
    }

    /// Blobs `user_id` owns or that are shared with it.
    pub async fn blobs_for(&self, user_id: &str) -> Result<Vec<BlobRow>> {
        sqlx::query(
            "SELECT b.id, b.owner_id, u.username AS owner, b.name, b.kind, b.created_at \
             FROM blobs b JOIN users u ON u.id = b.owner_id \
             WHERE b.owner_id = $1 OR EXISTS (SELECT 1 FROM blob_shares s WHERE s.blob_id = b.id AND s.recipient_id = $1) \
             ORDER BY b.created_at, b.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(Self::blob_from)
        .collect()
    }

    /// Records a new version; the number is one more than the newest.
    /// [`DbError::Duplicate`] if another upload took that number first.
    pub async fn add_version(&self, blob_id: &str, size: i64, sha256: &str) -> Result<i64> {
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM blob_versions WHERE blob_id = $1",
        )
        .bind(blob_id)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        sqlx::query("INSERT INTO blob_versions (blob_id, version, size, sha256, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(blob_id)
            .bind(next)
            .bind(size)
            .bind(sha256)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(next)
    }

    /// A blob's versions, oldest first.
    pub async fn versions(&self, blob_id: &str) -> Result<Vec<VersionRow>> {
        sqlx::query("SELECT version, size, sha256, created_at FROM blob_versions WHERE blob_id = $1 ORDER BY version")
            .bind(blob_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(VersionRow {
                    version: r.try_get("version")?,
                    size: r.try_get("size")?,
                    sha256: r.try_get("sha256")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// The first version a recipient may read, if the blob is shared with it.
    pub async fn share_from(&self, blob_id: &str, recipient_id: &str) -> Result<Option<i64>> {
        sqlx::query("SELECT from_version FROM blob_shares WHERE blob_id = $1 AND recipient_id = $2")
            .bind(blob_id)
            .bind(recipient_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0).map_err(DbError::from))
            .transpose()
    }

    /// Shares a blob with a recipient from `from_version` on (keeps an
    /// existing share as it is).
    pub async fn share(&self, blob_id: &str, recipient_id: &str, from_version: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO blob_shares (blob_id, recipient_id, from_version, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (blob_id, recipient_id) DO NOTHING",
        )
        .bind(blob_id)
        .bind(recipient_id)
        .bind(from_version)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes a share; false if there was none.
    pub async fn unshare(&self, blob_id: &str, recipient_id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM blob_shares WHERE blob_id = $1 AND recipient_id = $2")
            .bind(blob_id)
            .bind(recipient_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Who a blob is shared with: (username, first readable version).
    pub async fn shares(&self, blob_id: &str) -> Result<Vec<(String, i64)>> {
        sqlx::query(
            "SELECT u.username, s.from_version FROM blob_shares s JOIN users u ON u.id = s.recipient_id \
             WHERE s.blob_id = $1 ORDER BY u.username",
        )
        .bind(blob_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    /// Whether any version of any blob still stores these bytes.
    pub async fn sha_in_use(&self, sha256: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM blob_versions WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Deletes a blob, its versions and shares.
    pub async fn delete_blob(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM blobs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
