"""Generated gRPC code for package avpenet.v1 (from proto/avpenet/v1/*.proto by `make setup`; not committed)."""
