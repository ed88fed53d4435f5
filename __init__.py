"""bestiary: tri-modal (sound, image, text) animal datasets and contrastive models."""

__version__ = "0.1.0"
