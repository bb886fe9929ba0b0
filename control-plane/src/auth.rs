//! Passwords, tokens and invite codes, and the extractors that turn a
//! request's token into a user.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults, the
//! OWASP recommendation) on a blocking thread. Tokens and invite codes are
//! 32 and 16 random bytes shown as hex with a prefix (`jt_`, `ji_`); the
//! database holds only their SHA-256, so a leaked database does not leak
//! live tokens.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::db::{self, User};
use crate::server::AppState;

/// Name of the cookie the dashboard's login sets.
pub const TOKEN_COOKIE: &str = "jamd_token";

/// Hashes a password with Argon2id (slow on purpose: call off the async
/// threads, see [`hash_password_blocking`]).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("argon2 hash: {e}")))
}

/// Checks a password against a stored Argon2 PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// [`hash_password`] on tokio's blocking pool.
pub async fn hash_password_blocking(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(format!("hash task: {e}")))?
}

/// [`verify_password`] on tokio's blocking pool.
pub async fn verify_password_blocking(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// SHA-256 of a secret string, hex (what the database stores).
pub fn secret_hash(secret: &str) -> String {
    jam_transport::relay::hex_encode(&Sha256::digest(secret.as_bytes()))
}

/// A fresh login token.
pub fn new_token() -> String {
    format!("jt_{}", db::random_hex(32))
}

/// A fresh invite code.
pub fn new_invite_code() -> String {
    format!("ji_{}", db::random_hex(16))
}

/// The bearer token of a request: `Authorization: Bearer ...`, else the
/// dashboard cookie.
pub fn request_token(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v.to_string())
}

fn plausible_token(t: &str) -> bool {
    t.len() == 67 && t.starts_with("jt_") && t[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The logged-in user; rejects with 401 when the token is missing,
/// malformed, unknown, or expired.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = request_token(parts).ok_or(ApiError::Unauthorized("missing token"))?;
        if !plausible_token(&token) {
            return Err(ApiError::Unauthorized("invalid token"));
        }
        state
            .db
            .user_for_token(&secret_hash(&token), db::now_ms())
            .await?
            .map(AuthUser)
            .ok_or(ApiError::Unauthorized("invalid or expired token"))
    }
}

/// The logged-in user if the request carries a valid token, else nobody
/// (for pages anyone may see, with more for logged-in users).
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<User>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match request_token(parts) {
            Some(t) if plausible_token(&t) => Ok(MaybeUser(
                state
                    .db
                    .user_for_token(&secret_hash(&t), db::now_ms())
                    .await?,
            )),
            _ => Ok(MaybeUser(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = new_token();
        assert!(plausible_token(&t));
        assert!(!plausible_token(&t[..66]));
        assert!(!plausible_token(&t.replace("jt_", "xx_")));
        assert_ne!(secret_hash(&t), secret_hash(&new_token()));
    }
}
