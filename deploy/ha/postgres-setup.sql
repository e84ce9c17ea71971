-- The database both nodes share (run once, as a PostgreSQL superuser, e.g. `psql -f postgres-setup.sql`).
-- zato-gitops creates and migrates its tables itself (Alembic, at start, one node at a time), so its role
-- owns the database. Allow the two nodes in pg_hba.conf (hostssl zato_gitops zato_gitops 10.0.0.21/32 scram-sha-256,
-- and the same for 10.0.0.22) and set the password with \password zato_gitops.
CREATE ROLE zato_gitops LOGIN;
CREATE DATABASE zato_gitops OWNER zato_gitops;
