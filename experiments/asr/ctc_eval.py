"""CTC decoding measured against the decoder: WER / CER and wall-clock on the same batches.

    report = ctc_eval(transcriber, eval_examples(config, settings, "test", 200), beam=8)

Rows: "greedy" (the decoder, token by token), "ctc_greedy" (the CTC head's best path: the
encoder + adaptor + one linear layer, no decoder), and with beam > 0 "ctc_beam" (CTC prefix
beam search, host numpy, over the same logits). Each batch shape is compiled before the timed
pass, so seconds are steady-state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np

from chorus.decoding.ctc import ctc_prefix_beam_search
from chorus.eval.text_metrics import error_rates
from chorus.vocab import MEL_FRAMES_PER_SECOND
from experiments.asr.transcriber import Transcriber, pad_requests

BATCH = 8


def ctc_beam_texts(transcriber: Transcriber, request: dict, beam: int) -> list[str]:
    """The best transcript of each row by CTC prefix beam search over its valid frames."""
    logits, mask = transcriber.ctc_logits(request)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    mask = np.asarray(mask)
    texts = []
    for lp, m in zip(log_probs, mask, strict=True):
        (ids, _), *_ = ctc_prefix_beam_search(lp[m], beam)
        texts.append(transcriber.tokenizer.decode(ids))
    return texts


def ctc_eval(transcriber: Transcriber, examples: Sequence[dict], batch_size: int = BATCH,
             beam: int = 0) -> dict:
    """{"greedy" | "ctc_greedy" | "ctc_beam": error_rates + "seconds" + "rtf"} on `examples`
    (eval_examples rows: prompt, clip, reference_text) in batches of `batch_size`."""
    if not examples:
        raise ValueError("ctc_eval examples: expected at least one, got none")
    requests = [pad_requests(examples[i: i + batch_size], transcriber.layout,
                             transcriber.max_frames)
                for i in range(0, len(examples), batch_size)]
    refs = [ex["reference_text"] for ex in examples]
    audio = sum(float(r["audio_mask"].sum()) for r in requests) / MEL_FRAMES_PER_SECOND

    def decoded(mode):
        def texts(request):
            result = transcriber.decode(request, mode=mode)
            jax.block_until_ready(result.tokens)
            return transcriber.texts(result)
        return texts

    runs = {"greedy": decoded("greedy"), "ctc_greedy": decoded("ctc")}
    if beam > 0:
        runs["ctc_beam"] = lambda request: ctc_beam_texts(transcriber, request, beam)
    report = {}
    for name, fn in runs.items():
        for request in {r["audio_features"].shape[0]: r for r in requests}.values():
            fn(request)  # compile each batch shape
        start = time.perf_counter()
        hyps = [text for request in requests for text in fn(request)]
        seconds = time.perf_counter() - start
        report[name] = {**error_rates(refs, hyps), "seconds": seconds, "rtf": seconds / audio,
                        "utterances": len(examples), "batch_size": batch_size,
                        "examples": [{"reference": r, "hypothesis": h}
                                     for r, h in list(zip(refs, hyps, strict=True))[:5]]}
    if beam > 0:
        report["ctc_beam"]["beam"] = beam
    return report


def joint_rescore(transcriber: Transcriber, request: dict, beam: int,
                  weights: Sequence[float] = (0.3,)) -> dict[float, list[str]]:
    """{w: the best candidate's text per row} for each weight, over one candidate set and
    its scores (`Transcriber.rescore`, the joint CTC/attention rescoring of `--mode
    rescore`): choosing the weight costs one decode."""
    scored = transcriber.rescore(request, weights[0], beam)
    return {w: [transcriber.tokenizer.decode(scored.candidates[k]) for k in scored.picks(w)]
            for w in weights}
