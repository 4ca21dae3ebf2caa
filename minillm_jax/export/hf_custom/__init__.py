"""Template of the custom-code Hugging Face export (copied into the exported directory).

configuration_minillm.py and modeling_minillm.py need only torch and transformers: they are
written next to config.json (whose auto_map names them), so that
`AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` loads the model anywhere.
"""

from pathlib import Path

FILES = ("configuration_minillm.py", "modeling_minillm.py")
DIR = Path(__file__).resolve().parent
AUTO_MAP = {"AutoConfig": "configuration_minillm.MiniLLMConfig",
            "AutoModelForCausalLM": "modeling_minillm.MiniLLMForCausalLM"}
