"""Drop-in patches of third-party models so their attention runs through flashduo."""
