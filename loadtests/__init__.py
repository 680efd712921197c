"""Load tests, the benchmark and the soak for AVPENet Serve (`avpenet loadtest | bench | soak`)."""
