"""The heads a policy checkpoint is loaded with (MethodSpec.model_head): a language model that
generates, or a one-label sequence classifier that scores a text (a reward model). The head
decides how the checkpoint loads (rlhf.models.loading.load_model), PEFT's task type for a LoRA
adapter, and whether the trained model generates (the generation eval stage)."""

CAUSAL_LM = "causal_lm"
SEQUENCE_CLASSIFICATION = "sequence_classification"
MODEL_HEADS = (CAUSAL_LM, SEQUENCE_CLASSIFICATION)

# PEFT's task type for each head. SEQ_CLS also trains and saves the new classification head in
# full (PEFT's modules_to_save), beside the adapter.
LORA_TASK_TYPES = {CAUSAL_LM: "CAUSAL_LM", SEQUENCE_CLASSIFICATION: "SEQ_CLS"}
