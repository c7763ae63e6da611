"""Views of pyramid_sessup, one module per concern."""
