"""The AVPENet gateway: a Ray Serve app scoring uploaded clips over HTTP and gRPC (docs/ARCHITECTURE.md)."""
