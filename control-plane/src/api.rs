//! The HTTP API: accounts, devices, invites and sessions.
//!
//! Every handler returns `Result<_, ApiError>`; [`ApiError`] is turned into
//! a status and a JSON body `{"error": CODE, "message": TEXT}` in one place
//! ([`ApiError::into_response`]). Internal details (database errors) go to
//! the log, never to the client. JSON bodies go through [`ApiJson`], which
//! turns malformed or oversized bodies into the same error shape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use jam_transport::relay::Ticket;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::auth::{self, AuthUser, MaybeUser};
use crate::config::Registration;
use crate::db::{self, DbError, SessionRow};
use crate::relay::RelayCommand;
use crate::server::AppState;

/// Everything a handler can fail with, each mapped to one status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, wrong content type).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well-formed but a field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// 401: no valid token (missing, malformed, unknown, expired), or wrong
    /// credentials at login.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated but not allowed (not a member, not the owner).
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such thing (or not visible to the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: duplicate (a taken name, a registered key).
    #[error("{0}")]
    Conflict(&'static str),
    /// 413: the body is larger than allowed.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// 500: our fault; the detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// An internal error whose detail is logged.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::Internal(detail.into())
    }

    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Duplicate => ApiError::Conflict("already exists"),
            e => ApiError::Internal(format!("{e}: {:?}", std::error::Error::source(&e))),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request refused");
        }
        let body = serde_json::json!({ "error": code, "message": self.to_string() });
        (status, Json(body)).into_response()
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 413 when over the size
/// limit, 400 for anything malformed (with serde's message, which names the
/// field and position).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(r))
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::TooLarge(0))
            }
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge(0)),
            Err(r) => Err(ApiError::BadRequest(r.body_text())),
        }
    }
}

// ----- validation -----

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Invalid(msg.into())
}

/// Usernames: 3 to 32 of `a-z 0-9 _ . -`, starting with a letter or digit.
pub fn validate_username(s: &str) -> Result<(), ApiError> {
    let ok = (3..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric();
    ok.then_some(()).ok_or_else(|| {
        invalid("username must be 3 to 32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit")
    })
}

/// Passwords: 8 to 256 bytes.
pub fn validate_password(s: &str) -> Result<(), ApiError> {
    if !(8..=256).contains(&s.len()) {
        return Err(invalid("password must be 8 to 256 bytes long"));
    }
    Ok(())
}

/// Names shown to people (sessions, devices, blobs): 1 to 64 characters,
/// no control characters, not only spaces.
pub fn validate_name(what: &str, s: &str) -> Result<(), ApiError> {
    let chars = s.chars().count();
    if !(1..=64).contains(&chars) || s.chars().any(char::is_control) || s.trim().is_empty() {
        return Err(invalid(format!(
            "{what} must be 1 to 64 characters without control characters"
        )));
    }
    Ok(())
}

/// An X25519 public key: 64 hex digits, not all zero.
pub fn validate_public_key(s: &str) -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    jam_transport::relay::hex_decode(s, &mut b)
        .ok_or_else(|| invalid("public_key must be 64 hex digits (an X25519 public key)"))?;
    if b == [0; 32] {
        return Err(invalid("public_key must not be all zeros"));
    }
    Ok(s.to_ascii_lowercase())
}

/// A hex id of `bytes` bytes (path parameters); 404 otherwise, since no
/// such thing can exist.
pub fn check_id(what: &'static str, s: &str, bytes: usize) -> Result<(), ApiError> {
    if s.len() == bytes * 2
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(ApiError::NotFound(what))
    }
}

// ----- accounts -----

/// `POST /api/accounts`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Required when registration is by invite.
    #[serde(default)]
    pub invite_code: Option<String>,
}

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// Random id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Administrator.
    pub is_admin: bool,
}

impl From<&db::User> for UserView {
    fn from(u: &db::User) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            is_admin: u.is_admin,
        }
    }
}

async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let mut consumed = None;
    match state.config.registration {
        Registration::Open => {}
        Registration::Closed => return Err(ApiError::Forbidden("registration is closed")),
        Registration::Invite => {
            let code = req
                .invite_code
                .as_deref()
                .ok_or(ApiError::Forbidden("registration needs an invite code"))?;
            let h = auth::secret_hash(code);
            if code.len() > 128 || !state.db.consume_invite(&h, db::now_ms()).await? {
                return Err(ApiError::Forbidden("invalid or used invite code"));
            }
            consumed = Some(h);
        }
    }
    let hash = auth::hash_password_blocking(req.password).await?;
    match state.db.create_user(&req.username, &hash, false).await {
        Ok(u) => {
            tracing::info!(username = %u.username, "account created");
            Ok((StatusCode::CREATED, Json(UserView::from(&u))))
        }
        Err(e) => {
            if let Some(h) = consumed {
                state.db.restore_invite(&h).await?;
            }
            match e {
                DbError::Duplicate => Err(ApiError::Conflict("username is taken")),
                e => Err(e.into()),
            }
        }
    }
}

/// `POST /api/login`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// `POST /api/login` answer.
#[derive(Debug, Serialize)]
pub struct LoginResponse {
    /// Bearer token (`Authorization: Bearer ...`).
    pub token: String,
    /// Unix ms.
    pub expires_at: i64,
    /// Who logged in.
    pub user: UserView,
}

/// A hash of a password nobody has, so unknown users cost the same time as
/// wrong passwords.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if req.username.len() > 64 || req.password.len() > 256 {
        return Err(ApiError::Unauthorized("wrong username or password"));
    }
    let user = state.db.user_by_name(&req.username).await?;
    let phc = match &user {
        Some(u) => u.password_hash.clone(),
        None => match DUMMY_HASH.get() {
            Some(h) => h.clone(),
            None => {
                let h = auth::hash_password_blocking(db::random_hex(16)).await?;
                DUMMY_HASH.get_or_init(|| h).clone()
            }
        },
    };
    let ok = auth::verify_password_blocking(req.password, phc).await;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => return Err(ApiError::Unauthorized("wrong username or password")),
    };
    let token = auth::new_token();
    let expires_at = db::now_ms() + state.config.token_ttl.as_millis() as i64;
    state
        .db
        .insert_token(&auth::secret_hash(&token), &user.id, expires_at)
        .await?;
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::TOKEN_COOKIE,
        state.config.token_ttl.as_secs()
    );
    let body = LoginResponse {
        token,
        expires_at,
        user: UserView::from(&user),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let (mut parts, _) = Request::new(()).into_parts();
    parts.headers = headers;
    if let Some(t) = auth::request_token(&parts) {
        state.db.delete_token(&auth::secret_hash(&t)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn me(AuthUser(u): AuthUser) -> Json<UserView> {
    Json(UserView::from(&u))
}

// ----- invites -----

/// `POST /api/invites` (admins)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// How many accounts the code may create (default 1, at most 1000).
    #[serde(default)]
    pub uses: Option<i64>,
    /// Lifetime in seconds (default 7 days, at most 365 days).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// An invite code.
#[derive(Debug, Serialize)]
pub struct InviteView {
    /// The code to hand to the new user (shown once; stored hashed).
    pub code: String,
    /// Accounts it can create.
    pub uses: i64,
    /// Unix ms.
    pub expires_at: i64,
}

/// Creates an invite code (shared by the API and `jamd invite`).
pub async fn create_invite(
    db: &db::Db,
    created_by: Option<&str>,
    req: &InviteRequest,
) -> Result<InviteView, ApiError> {
    let uses = req.uses.unwrap_or(1);
    if !(1..=1000).contains(&uses) {
        return Err(invalid("uses must be 1 to 1000"));
    }
    let ttl = req.ttl_secs.unwrap_or(7 * 24 * 3600);
    if !(60..=365 * 24 * 3600).contains(&ttl) {
        return Err(invalid("ttl_secs must be 60 to 31536000"));
    }
    let code = auth::new_invite_code();
    let expires_at = db::now_ms() + ttl * 1000;
    db.insert_invite(&auth::secret_hash(&code), created_by, uses, expires_at)
        .await?;
    Ok(InviteView {
        code,
        uses,
        expires_at,
    })
}

async fn post_invite(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    if !u.is_admin {
        return Err(ApiError::Forbidden("only administrators create invites"));
    }
    Ok((
        StatusCode::CREATED,
        Json(create_invite(&state.db, Some(&u.id), &req).await?),
    ))
}

// ----- devices -----

/// `POST /api/devices`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    /// The user's name for the device.
    pub name: String,
    /// X25519 public key, 64 hex digits.
    pub public_key: String,
}

/// A device as the API shows it.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    /// Random id.
    pub id: String,
    /// Name.
    pub name: String,
    /// X25519 public key, hex.
    pub public_key: String,
    /// Unix ms.
    pub created_at: i64,
}

impl From<db::Device> for DeviceView {
    fn from(d: db::Device) -> Self {
        DeviceView {
            id: d.id,
            name: d.name,
            public_key: d.public_key,
            created_at: d.created_at,
        }
    }
}

/// The most devices one account may register.
const MAX_DEVICES: usize = 32;

async fn add_device(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    ApiJson(req): ApiJson<DeviceRequest>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    validate_name("name", &req.name)?;
    let key = validate_public_key(&req.public_key)?;
    if state.db.devices(&u.id).await?.len() >= MAX_DEVICES {
        return Err(invalid(format!(
            "at most {MAX_DEVICES} devices per account"
        )));
    }
    let d = state
        .db
        .add_device(&u.id, &req.name, &key)
        .await
        .map_err(|e| match e {
            DbError::Duplicate => ApiError::Conflict("this public key is already registered"),
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(d.into())))
}

async fn list_devices(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    Ok(Json(
        state
            .db
            .devices(&u.id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

async fn delete_device(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_id("device", &id, 16)?;
    if state.db.delete_device(&u.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("device"))
    }
}

async fn user_devices(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
    Path(username): Path<String>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    validate_username(&username).map_err(|_| ApiError::NotFound("user"))?;
    let user = state
        .db
        .user_by_name(&username)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(
        state
            .db
            .devices(&user.id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

// ----- sessions -----

/// `POST /api/sessions`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Unique name.
    pub name: String,
    /// Listed for everyone (default true).
    #[serde(default = "yes")]
    pub public: bool,
    /// A password joiners must give.
    #[serde(default)]
    pub password: Option<String>,
    /// Only users the owner invited may join.
    #[serde(default)]
    pub invite_only: bool,
}

fn yes() -> bool {
    true
}

/// A session as the API shows it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// 16 hex digits.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner's username.
    pub owner: String,
    /// Listed publicly.
    pub public: bool,
    /// Joining needs a password.
    pub has_password: bool,
    /// Joining needs an invitation.
    pub invite_only: bool,
    /// Number of members.
    pub members: i64,
    /// Relay node hosting it.
    pub node: String,
    /// Unix ms.
    pub created_at: i64,
}

impl From<&SessionRow> for SessionView {
    fn from(s: &SessionRow) -> Self {
        SessionView {
            id: s.id.clone(),
            name: s.name.clone(),
            owner: s.owner.clone(),
            public: s.is_public,
            has_password: s.password_hash.is_some(),
            invite_only: s.invite_only,
            members: s.members,
            node: s.node.clone(),
            created_at: s.created_at,
        }
    }
}

/// The relay address to hand a client: the configured public address, or
/// the host the client used for the API with the relay's port.
fn relay_addr_for(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(a) = &state.config.public_relay_addr {
        return a.clone();
    }
    let port = state.relay_local.port();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            // "host:port", "[v6]:port" or "host".
            if let Ok(sa) = h.parse::<SocketAddr>() {
                return Some(sa.ip().to_string());
            }
            let host = h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h);
            (!host.is_empty() && host.len() <= 253).then(|| host.to_string())
        })
        .unwrap_or_else(|| state.relay_local.ip().to_string());
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn create_session(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    validate_name("name", &req.name)?;
    let password_hash = match req.password {
        Some(p) => {
            if p.is_empty() || p.len() > 256 {
                return Err(invalid("password must be 1 to 256 bytes long"));
            }
            Some(auth::hash_password_blocking(p).await?)
        }
        None => None,
    };
    // What other nodes hand out for this session: never derived from the
    // request (a Host header is the client's to choose), so a session's
    // creator cannot point other members elsewhere.
    let relay = state
        .config
        .public_relay_addr
        .clone()
        .unwrap_or_else(|| state.relay_local.to_string());
    let id = loop {
        let id = db::random_hex(8);
        // Session id 0 never occurs on the wire; avoid it here too.
        if id != "0000000000000000" {
            break id;
        }
    };
    state
        .db
        .create_session(
            &id,
            &req.name,
            &u.id,
            req.public,
            password_hash.as_deref(),
            req.invite_only,
            &relay,
            &state.config.node_name,
        )
        .await
        .map_err(|e| match e {
            DbError::Duplicate => ApiError::Conflict("a session with this name exists"),
            e => e.into(),
        })?;
    let s = state
        .db
        .session(&id)
        .await?
        .ok_or_else(|| ApiError::internal("session vanished after insert"))?;
    tracing::info!(session = %s.id, name = %s.name, owner = %u.username, "session created");
    state.dashboard_changed(&s.id);
    Ok((StatusCode::CREATED, Json(SessionView::from(&s))))
}

async fn list_sessions(
    State(state): State<AppState>,
    MaybeUser(u): MaybeUser,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let rows = state
        .db
        .visible_sessions(u.as_ref().map(|u| u.id.as_str()))
        .await?;
    Ok(Json(rows.iter().map(SessionView::from).collect()))
}

/// Whether `user` may see a session (public, owner, member or invited).
async fn can_see(
    state: &AppState,
    s: &SessionRow,
    user: Option<&db::User>,
) -> Result<bool, ApiError> {
    if s.is_public {
        return Ok(true);
    }
    let Some(u) = user else { return Ok(false) };
    Ok(s.owner_id == u.id
        || u.is_admin
        || state.db.member_id(&s.id, &u.id).await?.is_some()
        || state.db.is_invited(&s.id, &u.id).await?)
}

async fn session_by_id(state: &AppState, id: &str) -> Result<SessionRow, ApiError> {
    check_id("session", id, 8)?;
    state
        .db
        .session(id)
        .await?
        .ok_or(ApiError::NotFound("session"))
}

async fn get_session(
    State(state): State<AppState>,
    MaybeUser(u): MaybeUser,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let s = session_by_id(&state, &id).await?;
    if !can_see(&state, &s, u.as_ref()).await? {
        return Err(ApiError::NotFound("session"));
    }
    Ok(Json(SessionView::from(&s)))
}

async fn get_session_by_name(
    State(state): State<AppState>,
    MaybeUser(u): MaybeUser,
    Path(name): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    validate_name("name", &name).map_err(|_| ApiError::NotFound("session"))?;
    let s = state
        .db
        .session_by_name(&name)
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    // A private session is found by its exact name (it is unlisted, not
    // secret); password and invitation still guard joining.
    let _ = u;
    Ok(Json(SessionView::from(&s)))
}

/// `POST /api/sessions/{id}/invites` (owner)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionInviteRequest {
    /// Who may join.
    pub username: String,
}

async fn invite_to_session(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SessionInviteRequest>,
) -> Result<StatusCode, ApiError> {
    let s = session_by_id(&state, &id).await?;
    if s.owner_id != u.id {
        return Err(ApiError::Forbidden("only the session's owner invites"));
    }
    validate_username(&req.username).map_err(|_| ApiError::NotFound("user"))?;
    let invitee = state
        .db
        .user_by_name(&req.username)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    state.db.invite_to_session(&s.id, &invitee.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/sessions/{id}/join`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The session password, if it has one.
    #[serde(default)]
    pub password: Option<String>,
    /// Which of the caller's devices joins (its key goes to the other
    /// members); default: the newest registered device, if any.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// A member as the API shows it: what a peer needs to reach it directly
/// and to encrypt to it.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Member id on the relay (the sender id in data packets).
    pub member_id: u32,
    /// Username.
    pub username: String,
    /// X25519 public key of the device it joined with, hex.
    pub public_key: Option<String>,
    /// Its public address as the relay saw its hello (`ip:port`).
    pub observed_addr: Option<String>,
    /// Addresses it reported on its own interfaces.
    pub reported_addrs: Vec<String>,
    /// Live on the relay now.
    pub online: bool,
}

/// `POST /api/sessions/{id}/join` answer: everything a peer needs to say
/// hello to the relay and to find the other members.
#[derive(Debug, Serialize)]
pub struct JoinResponse {
    /// The session.
    pub session: SessionView,
    /// The caller's member id.
    pub member_id: u32,
    /// Relay address, `host:port` (UDP).
    pub relay: String,
    /// Relay ticket, hex ([`Ticket::to_hex`]).
    pub ticket: String,
    /// Key for the tags of the caller's relay control messages, hex.
    pub hello_key: String,
    /// Unix ms when the ticket expires (join again before).
    pub ticket_expires_at: i64,
    /// The server's unix clock, ms, so the client can correct its hello
    /// timestamps for clock skew.
    pub server_time_ms: i64,
    /// Every member, the caller included.
    pub members: Vec<MemberView>,
}

/// The member list as every node shows it. Whether a member is online
/// comes from this node's relay when the session lives here, else from
/// what the hosting node recorded (`members.online_since`, see `nodes`).
async fn member_views(state: &AppState, s: &SessionRow) -> Result<Vec<MemberView>, ApiError> {
    let sid = u64::from_str_radix(&s.id, 16).map_err(|_| ApiError::NotFound("session"))?;
    let here = s.node == state.config.node_name;
    let online = if here {
        state.online_members(sid)
    } else {
        Default::default()
    };
    Ok(state
        .db
        .members(&s.id)
        .await?
        .into_iter()
        .map(|m| MemberView {
            online: crate::nodes::shows_online(here, online.contains(&m.member_id), m.online_since),
            member_id: m.member_id,
            username: m.username,
            public_key: m.public_key,
            observed_addr: m.observed_addr,
            reported_addrs: m
                .reported_addrs
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
        .collect())
}

async fn join_session(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    let s = session_by_id(&state, &id).await?;
    let already = state.db.member_id(&s.id, &u.id).await?.is_some();
    if !already && s.owner_id != u.id {
        if s.invite_only && !state.db.is_invited(&s.id, &u.id).await? {
            return Err(ApiError::Forbidden("this session is invite-only"));
        }
        if let Some(phc) = &s.password_hash {
            let given = req.password.clone().unwrap_or_default();
            if given.len() > 256 || !auth::verify_password_blocking(given, phc.clone()).await {
                return Err(ApiError::Forbidden("wrong session password"));
            }
        }
    }
    let devices = state.db.devices(&u.id).await?;
    let device_id = match &req.device_id {
        Some(d) => {
            check_id("device", d, 16)?;
            Some(
                devices
                    .iter()
                    .find(|x| &x.id == d)
                    .ok_or(ApiError::NotFound("device"))?
                    .id
                    .clone(),
            )
        }
        None => devices.last().map(|d| d.id.clone()),
    };
    let member_id = state
        .db
        .add_member(&s.id, &u.id, device_id.as_deref())
        .await?;
    let sid = u64::from_str_radix(&s.id, 16)
        .map_err(|_| ApiError::internal("stored session id is not hex"))?;
    let now = db::now_ms();
    let expires_ms = now + state.config.ticket_ttl.as_millis() as i64;
    let (ticket, key) = Ticket::issue(&state.secret, sid, member_id, (expires_ms / 1000) as u64);
    tracing::info!(session = %s.id, member = member_id, user = %u.username, "joined");
    state.dashboard_changed(&s.id);
    let s = session_by_id(&state, &id).await?;
    Ok(Json(JoinResponse {
        member_id,
        relay: if s.node == state.config.node_name {
            relay_addr_for(&state, &headers)
        } else {
            s.relay_addr.clone()
        },
        ticket: ticket.to_hex(),
        hello_key: key.to_hex(),
        ticket_expires_at: expires_ms,
        server_time_ms: now,
        members: member_views(&state, &s).await?,
        session: SessionView::from(&s),
    }))
}

/// Who may see a session's members (their keys and addresses): its
/// members, its owner and administrators.
async fn may_list_members(state: &AppState, s: &SessionRow, u: &db::User) -> Result<(), ApiError> {
    if state.db.member_id(&s.id, &u.id).await?.is_none() && s.owner_id != u.id && !u.is_admin {
        return Err(ApiError::Forbidden("not a member of this session"));
    }
    Ok(())
}

async fn list_members(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let s = session_by_id(&state, &id).await?;
    may_list_members(&state, &s, &u).await?;
    Ok(Json(member_views(&state, &s).await?))
}

/// `GET /api/sessions/{id}/members/events`: server-sent events named
/// `members`, each carrying the member list exactly as
/// `GET /api/sessions/{id}/members` returns it; the first at once, then one
/// whenever the list changes (a join, a leave, a member going on- or
/// offline on the relay, new addresses). Authorised like the list, and
/// again at every change: the stream ends when the caller may no longer
/// see the members (left, session deleted). It wakes on its own session's
/// change count only (`Dashboard::sessions`), so changes elsewhere on the
/// node cost it nothing; each wake-up re-reads (three queries) and counts
/// in `jamd_member_stream_renders_total`.
async fn member_events(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = session_by_id(&state, &id).await?;
    may_list_members(&state, &s, &u).await?;
    // Subscribed before the first render reads the list: a change in
    // between wakes the stream again.
    let signal = state.dashboard.sessions.subscribe(&s.id);
    let st = state.clone();
    let render = move |_count: u64| {
        let (state, id, u) = (st.clone(), s.id.clone(), u.clone());
        state.metrics.member_stream_render();
        async move {
            let s = state.db.session(&id).await.ok()??;
            may_list_members(&state, &s, &u).await.ok()?;
            let views = member_views(&state, &s).await.ok()?;
            serde_json::to_string(&views).ok().map(Arc::from)
        }
    };
    Ok(crate::dashboard::event_stream(&state, signal, "members", render).into_response())
}

async fn leave_session(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = session_by_id(&state, &id).await?;
    let Some(member) = state.db.remove_member(&s.id, &u.id).await? else {
        return Err(ApiError::Forbidden("not a member of this session"));
    };
    state.revoke(&s.id, member);
    tracing::info!(session = %s.id, member, user = %u.username, "left");
    state.dashboard_changed(&s.id);
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_session(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = session_by_id(&state, &id).await?;
    if s.owner_id != u.id && !u.is_admin {
        return Err(ApiError::Forbidden("only the session's owner deletes it"));
    }
    let members = state.db.members(&s.id).await?;
    state.db.delete_session(&s.id).await?;
    for m in members {
        state.revoke(&s.id, m.member_id);
    }
    state.dashboard_changed(&s.id);
    // Its streams end (their signal closes) and its count is not kept.
    state.dashboard.sessions.forget(&s.id);
    Ok(StatusCode::NO_CONTENT)
}

impl AppState {
    /// Tells the relay to drop a membership and refuse its ticket.
    pub(crate) fn revoke(&self, session_id: &str, member: u32) {
        if let Ok(sid) = u64::from_str_radix(session_id, 16) {
            let until = (db::now_ms() / 1000) as u64 + self.config.ticket_ttl.as_secs() + 60;
            let _ = self.relay_commands.send(RelayCommand::Revoke {
                session: sid,
                member,
                until_unix: until,
            });
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// The API routes (under `/api`) and `/healthz`.
pub fn router(state: &AppState) -> Router<AppState> {
    let json_limit = axum::extract::DefaultBodyLimit::max(state.config.max_json_bytes);
    Router::new()
        .route("/healthz", routing::get(|| async { "ok" }))
        .route("/api/accounts", routing::post(register))
        .route("/api/login", routing::post(login))
        .route("/api/logout", routing::post(logout))
        .route("/api/me", routing::get(me))
        .route("/api/invites", routing::post(post_invite))
        .route("/api/devices", routing::get(list_devices).post(add_device))
        .route("/api/devices/{id}", routing::delete(delete_device))
        .route("/api/users/{username}/devices", routing::get(user_devices))
        .route(
            "/api/sessions",
            routing::get(list_sessions).post(create_session),
        )
        .route(
            "/api/sessions/by-name/{name}",
            routing::get(get_session_by_name),
        )
        .route(
            "/api/sessions/{id}",
            routing::get(get_session).delete(delete_session),
        )
        .route(
            "/api/sessions/{id}/invites",
            routing::post(invite_to_session),
        )
        .route("/api/sessions/{id}/join", routing::post(join_session))
        .route("/api/sessions/{id}/members", routing::get(list_members))
        .route(
            "/api/sessions/{id}/members/events",
            routing::get(member_events),
        )
        .route("/api/sessions/{id}/leave", routing::post(leave_session))
        .route("/api/{*rest}", routing::any(not_found))
        .layer(json_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_accepts_the_documented_forms_only() {
        assert!(validate_username("ana").is_ok());
        assert!(validate_username("a.b-c_9").is_ok());
        for bad in [
            "ab",
            "Ana",
            "_ana",
            "ana'; DROP TABLE users;--",
            "ä123",
            &"a".repeat(33),
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
        assert!(validate_name("name", "Friday jam 🎹").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "   ").is_err());
        assert!(validate_name("name", "a\nb").is_err());
        assert!(validate_public_key(&"ab".repeat(32)).is_ok());
        assert!(validate_public_key(&"00".repeat(32)).is_err());
        assert!(validate_public_key("abcd").is_err());
        assert!(check_id("x", "00ff00ff00ff00ff", 8).is_ok());
        assert!(check_id("x", "00FF00FF00FF00FF", 8).is_err());
        assert!(check_id("x", "' OR 1=1 --", 8).is_err());
    }
}
