# The seed's GRPO example (Axolotl's docs), as written: a reward function and a GSM8K dataset
# transform, named in configs as rewards.rand_reward_func and rewards.oai_gsm8k_transform.
# Used by: python -m rlhf.train +experiment=grpo_gsm8k
import random
def rand_reward_func(completions, **kwargs) -> list[float]:
    return [random.uniform(0, 1) for _ in completions]

def oai_gsm8k_transform(cfg, *args, **kwargs):
    def transform_fn(example, tokenizer=None):
        label = example["answer"].split("####")[-1].strip().replace(",", "")
        return {
            "prompt": [{"role": "user", "content": example["question"]},],
            "answer": label,
        }
    return transform_fn, {"remove_columns": ["question"]}
