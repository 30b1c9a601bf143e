"""onnxruntime below every stage that runs a model: sessions on a provider, input feeds and data files."""
