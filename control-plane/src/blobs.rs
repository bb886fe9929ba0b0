//! The blob store for sealed `.agent` and `.scp` files.
//!
//! The server stores the bytes it is given, exactly, and never sees a key:
//! the files are sealed by their owner to their recipients' device keys
//! before upload. Files live content-addressed under
//! `DATA_DIR/blobs/<sha256>` (written to a temporary file while streaming,
//! then renamed, so a crash never leaves a half file under a real name);
//! the database holds names, versions, sizes, hashes and shares.
//!
//! Access rules:
//! - the owner reads, lists, uploads new versions of, shares and deletes;
//! - a blob shared with a recipient lets it read every version from the
//!   newest one at the time of sharing on (earlier versions were sealed
//!   before the recipient was added and are not served to it);
//! - revoking a share stops serving every version to that recipient at
//!   once; sharing again starts from the newest version at that time, so a
//!   version made while the recipient was revoked is never served to it;
//! - anyone else gets 404, as if the blob did not exist.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::{ApiError, check_id, validate_name, validate_username};
use crate::auth::AuthUser;
use crate::db::{self, BlobRow, VersionRow};
use crate::server::AppState;

/// `POST /api/blobs` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// File name.
    pub name: String,
    /// `agent`, `scp` or `other`.
    pub kind: String,
}

/// A stored version.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// 1, 2, ...
    pub version: i64,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Unix ms.
    pub created_at: i64,
}

impl From<VersionRow> for VersionView {
    fn from(v: VersionRow) -> Self {
        VersionView {
            version: v.version,
            size: v.size,
            sha256: v.sha256,
            created_at: v.created_at,
        }
    }
}

/// A blob as its owner or a recipient sees it.
#[derive(Debug, Serialize)]
pub struct BlobView {
    /// Random id.
    pub id: String,
    /// File name.
    pub name: String,
    /// `agent`, `scp` or `other`.
    pub kind: String,
    /// Owner's username.
    pub owner: String,
    /// The versions the caller may read.
    pub versions: Vec<VersionView>,
}

/// Answer to an upload.
#[derive(Debug, Serialize)]
pub struct UploadResponse {
    /// Blob id.
    pub id: String,
    /// The new version.
    pub version: VersionView,
}

fn validate_kind(kind: &str) -> Result<(), ApiError> {
    match kind {
        "agent" | "scp" | "other" => Ok(()),
        _ => Err(ApiError::Invalid("kind must be agent, scp or other".into())),
    }
}

fn blob_dir(state: &AppState) -> std::path::PathBuf {
    state.config.data_dir.join("blobs")
}

/// Streams the body into a temporary file with a running hash and a size
/// limit, then renames it to its content address. Returns (size, sha256).
async fn store_body(state: &AppState, body: Body) -> Result<(i64, String), ApiError> {
    let dir = blob_dir(state);
    let tmp_dir = dir.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", tmp_dir.display())))?;
    let tmp = tmp_dir.join(db::random_hex(16));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let limit = state.config.max_blob_bytes;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::TooLarge(limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::internal(format!("writing {}: {e}", tmp.display())))?;
        }
        if size == 0 {
            return Err(ApiError::Invalid("the body is empty".into()));
        }
        file.sync_all()
            .await
            .map_err(|e| ApiError::internal(format!("syncing {}: {e}", tmp.display())))?;
        let sha = jam_transport::relay::hex_encode(&hasher.finalize());
        let dest = dir.join(&sha);
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| ApiError::internal(format!("renaming to {}: {e}", dest.display())))?;
        Ok((size as i64, sha))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn upload(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    validate_name("name", &q.name)?;
    validate_kind(&q.kind)?;
    let (size, sha) = store_body(&state, body).await?;
    let id = db::random_hex(16);
    state.db.create_blob(&id, &u.id, &q.name, &q.kind).await?;
    let version = state.db.add_version(&id, size, &sha).await?;
    state.metrics.blob_bytes_in(size as u64);
    tracing::info!(blob = %id, version, size, "blob uploaded");
    Ok((
        StatusCode::CREATED,
        Json(UploadResponse {
            id,
            version: VersionView {
                version,
                size,
                sha256: sha,
                created_at: db::now_ms(),
            },
        }),
    ))
}

async fn owned_blob(state: &AppState, user: &db::User, id: &str) -> Result<BlobRow, ApiError> {
    check_id("blob", id, 16)?;
    match state.db.blob(id).await? {
        Some(b) if b.owner_id == user.id => Ok(b),
        _ => Err(ApiError::NotFound("blob")),
    }
}

async fn upload_version(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let b = owned_blob(&state, &u, &id).await?;
    let (size, sha) = store_body(&state, body).await?;
    let version = state
        .db
        .add_version(&b.id, size, &sha)
        .await
        .map_err(|e| match e {
            db::DbError::Duplicate => {
                ApiError::Conflict("another version was uploaded at the same time; retry")
            }
            e => e.into(),
        })?;
    state.metrics.blob_bytes_in(size as u64);
    tracing::info!(blob = %b.id, version, size, "blob version uploaded");
    Ok((
        StatusCode::CREATED,
        Json(UploadResponse {
            id: b.id,
            version: VersionView {
                version,
                size,
                sha256: sha,
                created_at: db::now_ms(),
            },
        }),
    ))
}

/// The versions `user` may read, oldest first (empty: no access).
async fn readable_versions(
    state: &AppState,
    b: &BlobRow,
    user: &db::User,
) -> Result<Vec<VersionRow>, ApiError> {
    let from = if b.owner_id == user.id {
        1
    } else {
        match state.db.share_from(&b.id, &user.id).await? {
            Some(v) => v,
            None => return Ok(Vec::new()),
        }
    };
    Ok(state
        .db
        .versions(&b.id)
        .await?
        .into_iter()
        .filter(|v| v.version >= from)
        .collect())
}

async fn list(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
) -> Result<Json<Vec<BlobView>>, ApiError> {
    let mut out = Vec::new();
    for b in state.db.blobs_for(&u.id).await? {
        let versions = readable_versions(&state, &b, &u).await?;
        out.push(BlobView {
            id: b.id,
            name: b.name,
            kind: b.kind,
            owner: b.owner,
            versions: versions.into_iter().map(Into::into).collect(),
        });
    }
    Ok(Json(out))
}

async fn serve(state: &AppState, b: &BlobRow, v: &VersionRow) -> Result<Response, ApiError> {
    let path = blob_dir(state).join(&v.sha256);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("opening {}: {e}", path.display())))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    state.metrics.blob_bytes_out(v.size as u64);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, v.size.to_string()),
            (
                header::HeaderName::from_static("x-jam-blob-version"),
                v.version.to_string(),
            ),
            (
                header::HeaderName::from_static("x-jam-blob-sha256"),
                v.sha256.clone(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    b.name.replace(['"', '\\'], "_")
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn download_latest(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id("blob", &id, 16)?;
    let b = state
        .db
        .blob(&id)
        .await?
        .ok_or(ApiError::NotFound("blob"))?;
    let v = readable_versions(&state, &b, &u)
        .await?
        .pop()
        .ok_or(ApiError::NotFound("blob"))?;
    serve(&state, &b, &v).await
}

async fn download_version(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id("blob", &id, 16)?;
    let version: i64 = version.parse().map_err(|_| ApiError::NotFound("version"))?;
    let b = state
        .db
        .blob(&id)
        .await?
        .ok_or(ApiError::NotFound("blob"))?;
    let v = readable_versions(&state, &b, &u)
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .ok_or(ApiError::NotFound("version"))?;
    serve(&state, &b, &v).await
}

async fn delete(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let b = owned_blob(&state, &u, &id).await?;
    let shas: Vec<String> = state
        .db
        .versions(&b.id)
        .await?
        .into_iter()
        .map(|v| v.sha256)
        .collect();
    state.db.delete_blob(&b.id).await?;
    for sha in shas {
        if !state.db.sha_in_use(&sha).await? {
            let _ = tokio::fs::remove_file(blob_dir(&state).join(&sha)).await;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A share as the owner sees it.
#[derive(Debug, Serialize)]
pub struct ShareView {
    /// Recipient.
    pub username: String,
    /// First version the recipient may read.
    pub from_version: i64,
}

async fn shares(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<ShareView>>, ApiError> {
    let b = owned_blob(&state, &u, &id).await?;
    Ok(Json(
        state
            .db
            .shares(&b.id)
            .await?
            .into_iter()
            .map(|(username, from_version)| ShareView {
                username,
                from_version,
            })
            .collect(),
    ))
}

async fn recipient(state: &AppState, username: &str) -> Result<db::User, ApiError> {
    validate_username(username).map_err(|_| ApiError::NotFound("user"))?;
    state
        .db
        .user_by_name(username)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

async fn share(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let b = owned_blob(&state, &u, &id).await?;
    let r = recipient(&state, &username).await?;
    if r.id == u.id {
        return Err(ApiError::Invalid(
            "the owner cannot share with itself".into(),
        ));
    }
    let newest = state
        .db
        .versions(&b.id)
        .await?
        .last()
        .map(|v| v.version)
        .unwrap_or(1);
    state.db.share(&b.id, &r.id, newest).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unshare(
    State(state): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let b = owned_blob(&state, &u, &id).await?;
    let r = recipient(&state, &username).await?;
    if state.db.unshare(&b.id, &r.id).await? {
        tracing::info!(blob = %b.id, recipient = %r.username, "share revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("share"))
    }
}

/// The blob routes; uploads have their own size limit (streamed), so the
/// JSON body limit is lifted here.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/blobs", routing::get(list).post(upload))
        .route(
            "/api/blobs/{id}",
            routing::get(download_latest).delete(delete),
        )
        .route("/api/blobs/{id}/versions", routing::post(upload_version))
        .route(
            "/api/blobs/{id}/versions/{version}",
            routing::get(download_version),
        )
        .route("/api/blobs/{id}/shares", routing::get(shares))
        .route(
            "/api/blobs/{id}/shares/{username}",
            routing::put(share).delete(unshare),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
}
