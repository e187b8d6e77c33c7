"""The one trainer every mode and algorithm runs through (see docs/training.md).

    experiment.py     the Experiment contract (init_fn, loss_fn, iterators, evaluate, FLOPs)
    trainer.py        Trainer.run: shard, restore or init, the loop, eval, checkpoints
    step.py           TrainState, the pure train / eval steps (NaN/Inf guard)
    optimizer.py      AdamW + warmup/cosine, clipping, decay mask, accumulation
    partitioning.py   state / batch shardings, jitted sharded steps
    checkpointing.py  orbax CheckpointManager: state + data position + config
    run_config.py     workdir/config.json and the resume compatibility check
    prefetch.py       background batches with their resume points and fingerprints
    distributed.py    multi-host initialization, global batches, cross-host agreement
    interrupts.py     SIGTERM / Ctrl-C -> checkpoint and a clean exit
    metrics.py        metrics.jsonl, TensorBoard, the console line
    tfevents.py       the TensorBoard event-file format, without TensorFlow
    hardware.py       peak FLOP/s per device kind, MFU
    flops.py          model FLOPs of a backbone train step
    losses.py         masked cross-entropy, token accuracy
    lm_loss.py        the generic LM loss of the backbone
    synthetic.py      deterministic synthetic batches / experiment (tests, benchmarks)
    atomic.py         atomic file writes
    evaluation.py     eval loops, `chorus eval`
    cli.py            `chorus train`, `chorus eval`
"""
