"""The ``gateway`` sub-commands of the exporter, one module each: export (and validate),
finetune, register, eval. ``exporter.cli.add_commands`` registers them."""
