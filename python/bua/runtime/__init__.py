"""On-device runtime: bundle loading and verification, onnxruntime encoder, llama.cpp session."""
