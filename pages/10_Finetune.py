"""Fine-tune: instruction (full or LoRA) or classification on a copy of a model, then before/after."""
from explorer.views.finetune import page

page()
