"""The `avpenet` command: the top layer, above the library (`avpenet`), Triton (`ensemble`), the gateway
(`preprocess_service`) and the load tests (`loadtests`). Nothing below imports from here."""
