"""AVPENet: audio-visual pain estimation for patients who cannot self-report."""
