"""Audio networks: log-mel front-end, encoders (CNN, ViT, EfficientAT MobileNet), heads, model factory."""
