"""The policy: its artifact on disk, where it is served from, and how it is exported."""
