"""Turning captured traffic into training data, and closing the distillation loop.

    capture store --selection--> examples --curation--> split --output--> train/valid JSONL
                                                                  |
                          validation + token statistics + report <-+
    finetune (a pluggable backend) -> register (admin API or config file) -> eval

Imports ``capture`` and third-party packages only, never ``gateway`` or ``router``: the
exporter runs from a laptop against the production database without starting a gateway.

Modules, one concept each: errors (the error tree), filters (what to select), selection
(keyset-paginated reads), database (which database), examples (a call as a chat example),
system_prompt, normalize (canonical forms and keys), neardup (MinHash LSH), leaks, split (by
groups of similar prompts), output (atomic JSONL), tokens, validate, check_file (a JSONL file's
report), hyperparams, report, pipeline (the export), preference (DPO pairs), pair_judge
(LLM-judged shadow pairs), finetune/ (backends, the job loop, metrics, plots), register,
evaluate/ (held-out prompts, replay, checks, judge, statistics), commands/ (one per CLI
command), cli, demo.
See README.md beside this file.
"""
