"""The admin GraphQL API, served on its own listener."""
