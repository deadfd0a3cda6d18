"""Reaching the Hugging Face hub: asked once, answered fast, and a failure said once.

huggingface_hub retries a request that meets a network error five times, 1 to 8 s apart,
warning each time, and transformers and datasets ask for several files per load: with the
hub unreachable a run waited 30 to 60 s before failing. So before a process's first hub
load, one probe (a HEAD of the hub's endpoint through huggingface_hub's own HTTP client, so
its proxy and certificate settings apply, bounded to PROBE_SECONDS) tells whether the hub
answers at all:

- it answers: models and datasets load as the libraries load them;
- it does not: the libraries are put in their offline mode for the rest of the process, so
  what the local Hugging Face cache holds still loads and anything else fails at once;
- HF_HUB_OFFLINE=1 (or HF_DATASETS_OFFLINE=1 for datasets): offline by the user's word, no probe.

`failure()` turns a failed hub load into one message: what could not be loaded, why (the hub
cannot be reached, offline mode, no such id, gated, no such revision) and the override that
fixes it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class HubState:
    online: bool
    why: str = ""  # why not online, as a clause: "HF_HUB_OFFLINE=1 is set", "the hub X cannot be reached (...)"


class _Probed:
    state: HubState | None = None  # this process's answer, asked once


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _why_no_answer(error: BaseException, seconds: float) -> str:
    text = str(error).strip() or type(error).__name__
    if "timed out" in text.lower() or "timeout" in type(error).__name__.lower():
        return f"no answer within {seconds:g} s"
    return re.sub(r"\[Errno -?\d+\]\s*", "", text.splitlines()[0]).strip()


def probe(url: str, seconds: float = PROBE_SECONDS) -> str | None:
    """None if `url` answers an HTTP request within `seconds` (any status: something answers),
    else why not. Runs in a thread joined with the deadline, because a host name whose DNS
    server stays silent blocks in the resolver, where no socket timeout reaches."""
    from huggingface_hub.utils import get_session

    outcome: list[str | None] = []

    def ask() -> None:
        try:
            get_session().head(url, timeout=seconds, follow_redirects=False)
            outcome.append(None)
        except Exception as error:  # whatever the HTTP stack raises, the hub did not answer
            outcome.append(_why_no_answer(error, seconds))

    thread = threading.Thread(target=ask, name="hub-probe", daemon=True)
    thread.start()
    thread.join(seconds + 1)
    return outcome[0] if outcome else f"no answer within {seconds:g} s"


def _go_offline() -> None:
    """The libraries' own offline switches, read at call time: every later hub request of this
    process is refused at once (no retries) and loads are served from the local cache."""
    import datasets
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True


def state() -> HubState:
    """Whether this process can use the hub; probed at the first call, then remembered."""
    if _Probed.state is None:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            _Probed.state = HubState(False, "HF_HUB_OFFLINE=1 is set")
        else:
            why = probe(constants.ENDPOINT)
            if why is None:
                _Probed.state = HubState(True)
            else:
                _Probed.state = HubState(False, f"the hub {constants.ENDPOINT} cannot be reached ({why})")
                _go_offline()
    return _Probed.state


def datasets_state() -> HubState:
    """As `state()`, for the datasets library, which HF_DATASETS_OFFLINE=1 alone makes offline."""
    import datasets
    from huggingface_hub import constants

    by_user = HubState(False, "HF_DATASETS_OFFLINE=1 is set")
    if _Probed.state is None and datasets.config.HF_HUB_OFFLINE and not constants.HF_HUB_OFFLINE:
        return by_user  # no probe: the datasets library will not ask the hub anyway
    hub = state()
    return by_user if hub.online and datasets.config.HF_HUB_OFFLINE else hub


def cached(repo_id: str, filename: str = "config.json") -> bool:
    """Whether the local hub cache holds `filename` of the model `repo_id` (loadable offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except ValueError:  # not a valid repo id
        return False


def _chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return found


def failure(what: str, name: str, fix: str, error: BaseException, hub: HubState,
            revision: str | None = None, revision_key: str | None = None) -> str:
    """The message for a hub load of `what` `name` that raised `error`: what, why, and `fix`
    (the override to type). `hub` is the state the load ran in."""
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    chain = _chain(error)
    text = " ".join(str(e) for e in chain).lower()
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

    def found(*kinds: type | str) -> bool:
        return any(isinstance(e, k) if isinstance(k, type) else type(e).__name__ == k for e in chain for k in kinds)

    unreached = found(LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)
    if found(GatedRepoError) or "is a gated dataset" in text:  # datasets words it so, dropping the cause
        page = f"{endpoint()}/{'datasets/' if what == 'dataset' else ''}{name}"
        why = f"it is gated on the hub: accept its terms at {page} and log in (`hf auth login` or HF_TOKEN)"
    elif found(RevisionNotFoundError) or ("revision '" in text and "doesn't exist" in text):
        why = f"the hub has no revision {revision!r} of it" if revision else "the hub has no such revision of it"
        if revision_key:
            fix = f"{fix}, or a revision that exists: {revision_key}=<branch, tag or commit>"
    elif found(RepositoryNotFoundError, "DatasetNotFoundError"):
        why = f"there is no repository {name!r} on the hub {endpoint()} (or it is private: log in with `hf auth login`)"
    elif not hub.online and (unreached or "cache" in text):
        why = f"{hub.why}, and the local Hugging Face cache does not hold it"
    elif unreached:
        why = f"the hub {endpoint()} cannot be reached ({first})"
    else:
        why = first
    return f"cannot load the {what} {name!r}: {why}. {fix}"
