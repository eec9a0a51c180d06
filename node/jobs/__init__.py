"""Background work driven by APScheduler; the database is the source of truth."""
