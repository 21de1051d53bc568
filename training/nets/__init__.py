"""Audio networks: log-mel front-end, encoders (CNN, ViT), heads, and the model factory."""
