"""Models: loading the policy, a reward model's checkpoint and the tokenizer the way a hub model
loads (`loading`), the chat templates a config can name (`chat_templates`), the heads a method
loads its checkpoint with (`heads`), and which reference model a method compares against
(`reference`).

May import: rlhf.core, rlhf.assets, rlhf.config, rlhf.run.
"""
