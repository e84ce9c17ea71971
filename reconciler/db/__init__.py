"""The state database: its schema, its migrations, and leader election on it."""
