"""The command layer: `hpml COMMAND`, one module per group of commands; nothing imports it.

    main        the parser (one `register` per group) and the collective failure rule around
                every command
    options     what every group shares: the parser and help layout, --config / --set, argument types
    data        synth, covidx build|import, preprocess, shards verify
    training    config show, train, evaluate, predict, export, demo
    cluster     submit, status, sweep report, efficiency (login-node commands: no TensorFlow)
    bench       bench preprocess|input|loop|scaling
    demo        the whole pipeline, each stage as `mpirun -np N hpml ...`
    completion  `hpml completion bash|zsh`: a completion script generated from the parser

Stage modules are imported inside each command, so `hpml --help` answers without paying
TensorFlow's import time. May import every other part of hpml and preprocess (not hpml.api, which
shares its layer).
"""

from hpml.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
