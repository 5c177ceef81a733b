"""Ray Serve app exposing the latest JPO policy over HTTP."""
