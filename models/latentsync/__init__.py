"""LatentSync lip-sync: our own inference code, written from the published architecture.

unet: the 3D UNet (state-dict compatible with the official `latentsync_unet.pt`);
audio: log-mel, the Whisper-tiny encoder and per-frame feature chunks;
face, landmarks: face points, the similarity warp to the model resolution and the paste-back;
denoise: the DDIM loop with guidance and optional DeepCache-style reuse;
media: decoding the inputs (the output goes through models/mp4.py); options: LATENTSYNC_* settings;
backend: the served model (`latentsync`, `latentsync-tiny` in tiny.py).
"""
