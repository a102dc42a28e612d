"""Training character LoRAs and writing them as files other tools load."""
