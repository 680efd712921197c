"""gRPC code for avpenet.v1, generated from proto/avpenet/v1/*.proto by `make setup` (not committed)."""
