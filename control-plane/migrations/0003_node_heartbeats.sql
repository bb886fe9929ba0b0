-- Which nodes are running: each node pushes its own deadline forward at
-- every membership sweep and deletes its row when it stops. A node past its
-- deadline (killed, or cut off from the database) hosts nobody: the other
-- nodes show the members of its sessions offline.
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    alive_until BIGINT NOT NULL
);
