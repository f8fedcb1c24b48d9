"""Server: the gRPC service and its client."""
