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

from chorus.decoding.ctc import ctc_prefix_beam_search, ctc_sequence_logprob
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
    """Joint CTC/attention rescoring (Watanabe et al. 2017) of an n-best per row: the decoder's
    greedy transcript plus the CTC prefix beam's `beam` best, each scored

        w * log p_ctc(y | x) + (1 - w) * log p_dec(y <eos> | prompt)

    (log p_ctc exact, by optax's forward algorithm; log p_dec teacher-forced through the
    training forward). {w: the best candidate's text per row} for each weight."""
    from experiments.asr.transcriber import text_ids_of

    layout = transcriber.layout
    greedy = transcriber.decode(request, mode="greedy")
    logits, mask = transcriber.ctc_logits(request)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    mask = np.asarray(mask)
    width = request["prompts"].shape[1] + transcriber.settings.max_new_tokens
    rows, owners = [], []
    for i, (lp, m) in enumerate(zip(log_probs, mask, strict=True)):
        cands = {tuple(text_ids_of(np.asarray(greedy.tokens[i, :int(greedy.lengths[i])]),
                                   layout).tolist())}
        cands |= {ids for ids, _ in ctc_prefix_beam_search(lp[m], beam)}
        # room for <eos>; a row whose every candidate is too long keeps its shortest, cut
        fitting = [ids for ids in sorted(cands)
                   if len(ids) < transcriber.settings.max_new_tokens]
        for ids in fitting or [min(cands, key=len)[:transcriber.settings.max_new_tokens - 1]]:
            rows.append(ids)
            owners.append(i)
    owners = np.asarray(owners)
    dec = _decoder_logprobs(transcriber, request, owners, rows, width)
    labels = np.zeros((len(rows), max(1, max(len(r) for r in rows))), np.int32)
    for k, ids in enumerate(rows):
        labels[k, :len(ids)] = ids
    ctc = np.asarray(ctc_sequence_logprob(logits[owners], mask[owners], labels,
                                          np.array([len(r) for r in rows])))
    out = {}
    for w in weights:
        joint = w * ctc + (1 - w) * dec
        best = [max(np.flatnonzero(owners == i), key=lambda k: joint[k])
                for i in range(len(mask))]
        out[w] = [transcriber.tokenizer.decode(rows[k]) for k in best]
    return out


def _decoder_logprobs(transcriber: Transcriber, request: dict, owners: np.ndarray,
                      rows: Sequence[tuple[int, ...]], width: int) -> np.ndarray:
    """[N] log p_dec(ids <eos> | the owner row's prompt), teacher-forced."""
    import jax.numpy as jnp

    from chorus.rl.logprobs import sequence_logprobs

    layout = transcriber.layout
    tokens = np.full((len(rows), width), layout.pad_id, np.int32)
    scored = np.zeros((len(rows), width), bool)  # positions whose *next* token is scored
    for k, (i, ids) in enumerate(zip(owners, rows, strict=True)):
        n = int(request["lengths"][i])
        seq = [*request["prompts"][i, :n], *ids, layout.eos_id]
        tokens[k, :len(seq)] = seq
        scored[k, n - 1: len(seq) - 1] = True
    targets = np.concatenate([tokens[:, 1:], np.full((len(rows), 1), layout.pad_id)], axis=1)
    out = transcriber.asr.backbone.apply(
        {"params": transcriber.params["backbone"]}, jnp.asarray(tokens),
        jnp.broadcast_to(jnp.arange(width), tokens.shape), jnp.ones_like(tokens),
        jnp.asarray(request["audio_features"][owners]), jnp.asarray(request["audio_mask"][owners]))
    return np.asarray(sequence_logprobs(out["logits"], jnp.asarray(targets),
                                        jnp.asarray(scored)).sum(-1), np.float64)
