-- Whether a member is live on its session's relay, for the nodes that do
-- not host the session (they share the database, not the relay): unix ms
-- of the hello the hosting node's relay accepted, NULL while offline.
ALTER TABLE members ADD COLUMN online_since BIGINT;
