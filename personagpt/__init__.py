"""PersonaGPT shared package: config, data, chat template, model loading, evaluation, artifact manifests."""

__version__ = "0.1.0"
