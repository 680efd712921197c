"""AVPE-Synth: a synthetic audio-visual pain dataset in the on-disk format a hospital hands over.

Modules: vocal (source–filter cries/moans and confounders), noise (hospital background, SNR mixing),
face (face tracks on a real neutral face), render (MP4 from the photo), dataset (plan, labels, files),
cli (`avpenet synth`). See docs/DATA.md.
"""
