"""LatentSync lip-sync: our own inference code, written from the published architecture.

unet: the 3D UNet (state-dict compatible with the official `latentsync_unet.pt`);
audio: log-mel, the Whisper-tiny encoder and per-frame feature chunks;
face: face landmarks, the similarity warp to the model resolution and the paste-back;
pipeline: the DDIM loop with guidance and optional DeepCache-style reuse;
backend: the served model (`latentsync`, `latentsync-tiny`).
"""
