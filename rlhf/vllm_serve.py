"""python -m rlhf.vllm_serve <same overrides as train>: the vLLM server GRPO-family methods
generate with, in the foreground, on the GPUs hardware.vllm_gpus names (rlhf.launch.vllm_serve;
a job can also start its own: rlhf.cluster.vllm_server)."""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.launch.vllm_serve import main as command

        command()


if __name__ == "__main__":
    main()
