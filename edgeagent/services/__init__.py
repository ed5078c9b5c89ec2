"""The node's built-in protocols, each a ``host.Service``: the worker driver, the peer registry,
routes and forwarding, WebRTC signalling, and the network watch (probes and mDNS)."""
