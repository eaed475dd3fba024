"""Export a trained curriculum checkpoint to an on-device bundle (ships as `bua.export`).

CLI: `bua-export --checkpoint RUN_DIR --quant q4_k_m --out BUNDLE_DIR` (`bua.export.cli`).
Modules import torch / transformers only inside the functions that need them.

- `pipeline`: `export_run(run_dir, out_dir, quant)`, `export_bundle(...pieces...)`, `ExportSummary`
- `gguf_convert`: `convert_hf_to_gguf(hf_dir, out_path, dtype)` for llama and qwen2
- `quantize`: `quantize_gguf(src, out, quant)`, `QUANT_TYPES`, `QuantizeReport` (fallbacks)
- `merge`: `validate_adapter`, `merge_adapter` (peft LoRA, fp32)
- `onnx_export`: `load_soft_tokenizer`, `export_encoder_onnx` (onnxruntime-checked)
- `parity`: `HFReference`, `tokenization_parity`, `logits_parity`, `greedy_parity`
- `manifest`: `write_manifest` (the reader is `bua.runtime.bundle.Bundle.load`)
- `errors`: `ExportError`, raised for every problem a user can fix

See docs/EXPORT.md.
"""
