"""The one trainer every mode and algorithm runs through (see docs/training.md).

    experiment.py     the Experiment contract (init_fn, loss_fn, iterators, evaluate, FLOPs,
                      assets, export_params; staged experiments)
    state.py          TrainState, the param / state specs (shardings from logical names), init
    step.py           the pure train step (NaN/Inf guard) and eval step
    optimizer.py      AdamW + warmup/cosine, clipping, decay mask, accumulation
    partitioning.py   the jitted sharded train step; shapes for `chorus compile`
    trainer.py        Trainer.run: restore or init, the loop, eval, checkpoints, progress
    stages.py         Stage and the runner of staged experiments (W/<stage>/ each)
    evaluation.py     the one eval loop (evaluate_loss); evaluate_checkpoint (`chorus eval`)
    checkpointing.py  orbax CheckpointManager: state + data position + config; the full
                      restore (resume) and the params-only restore (inference)
    restore.py        load_run: a run directory -> config, experiment, params (inference)
    init_from.py      params from another run (an earlier stage, a backbone_from, an RL
                      init): preload / release hooks and pretrained inside init_fn
    init_feed.py      how those values enter the init program: an argument placed in the
                      trees' shardings (no host callback)
    assets.py         files inference needs, copied into the run (a tokenizer)
    run_config.py     workdir/config.json and the resume compatibility check
    prefetch.py       background batches with their resume points and fingerprints
    distributed.py    multi-host initialization, global batches, cross-host agreement
    interrupts.py     SIGTERM / Ctrl-C -> checkpoint and a clean exit
    metrics.py        metrics.jsonl, TensorBoard (tensorboardX)
    hardware.py       peak FLOP/s per device kind, MFU
    lm_loss.py        the generic LM loss of the backbone
    cli.py            `chorus train`, `chorus eval`
"""
