"""Export a trained curriculum checkpoint to an on-device bundle (ships as `bua.export`).

Imports nothing heavy: `bua-export --help` works in a runtime-only install.
"""

# GGUF types bua-export writes (llama.cpp's names, lower case); bua.export.quantize maps each to
# llama.cpp's ftype.
QUANT_NAMES = ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0")
