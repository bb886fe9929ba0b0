-- jamd schema, version 1. This file must stay valid for both SQLite and
-- PostgreSQL: only TEXT and BIGINT columns, no backend-specific types.
-- Times are unix milliseconds; flags are 0/1; ids are random hex strings.

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);

CREATE TABLE invites (
    code_hash TEXT PRIMARY KEY,
    created_by TEXT,
    uses_left BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, public_key)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    is_public BIGINT NOT NULL,
    password_hash TEXT,
    invite_only BIGINT NOT NULL,
    relay_addr TEXT NOT NULL,
    node TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE session_invites (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE members (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id TEXT REFERENCES devices(id) ON DELETE SET NULL,
    joined_at BIGINT NOT NULL,
    observed_addr TEXT,
    reported_addrs TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_id, member_id),
    UNIQUE (session_id, user_id)
);

CREATE TABLE blobs (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX blobs_owner ON blobs(owner_id);

CREATE TABLE blob_versions (
    blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blob_id, version)
);

CREATE TABLE blob_shares (
    blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    recipient_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    from_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blob_id, recipient_id)
);
