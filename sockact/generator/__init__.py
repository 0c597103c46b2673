"""The generator: a command line's options become a validated spec (spec), then unit files (render, with
escape, sandbox and versions), a Kubernetes manifest (kube), or words (explain); writer is the only
module that writes unit files to disk. Nothing here talks to systemd or serves requests."""
