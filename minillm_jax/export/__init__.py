"""Export to / import from PyTorch: llm-baselines state dicts and Hugging Face model directories.

    from minillm_jax import export
    arrays, notes = export.export_arrays(params, config, "llm-baselines")   # {torch key: np array}
    params = export.import_arrays(state_dict, config, "llm-baselines")
    export.llm_baselines.save(params, config, "model.pt")   # + model.args.json
    export.hf.save(params, config, "hf_dir")                 # config.json + model.safetensors (+ tokenizer)
        # a stock transformers class where one computes the model exactly, else custom code
        # (hf_custom/: configuration_minillm.py + modeling_minillm.py, trust_remote_code=True)

Command lines: python -m minillm_jax.export.to_torch and python -m minillm_jax.export.from_torch
(the same as tools/convert_to_torch.py and tools/convert_from_torch.py).
Anything that cannot be converted exactly raises `ConversionError` (a ValueError) with one
message listing every offending key or option. The mapping is table-driven, one rules function
per (format, architecture) in `architectures.py`; parity with independent PyTorch models and
with transformers is tested in tests/export/.
"""

from minillm_jax.export import architectures, hf, llm_baselines
from minillm_jax.export.architectures import FORMATS, HF, HF_CUSTOM, LLM_BASELINES
from minillm_jax.export.core import (
    expected_keys, export_arrays, import_arrays, model_config, synthetic_keys)
from minillm_jax.export.errors import ConversionError

__all__ = ["ConversionError", "FORMATS", "HF", "HF_CUSTOM", "LLM_BASELINES", "architectures", "expected_keys",
           "export_arrays", "hf", "import_arrays", "llm_baselines", "model_config",
           "synthetic_keys"]
