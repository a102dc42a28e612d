"""Schema of the server database (`server.db`): accounts, sessions and the job queue."""
