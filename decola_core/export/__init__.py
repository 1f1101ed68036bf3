"""Export to ONNX and TorchScript (``decola export``) and running the exported files."""
