"""The leaves every side stands on: the platform's errors and their wording (`errors`), code a
config names by module path (`usercode`), the one probe of the Hugging Face hub (`hub`) and file
locks (`locks`).

May import: nothing of rlhf but `rlhf.assets`; no torch, no Hydra.
"""
