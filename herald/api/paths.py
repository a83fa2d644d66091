"""Where the API lives: every path is under the Postiz integration's prefix (DESIGN.md)."""

PREFIX = "/api/postiz"
