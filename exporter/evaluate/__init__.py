"""Offline evaluation of a candidate variant against the recorded baseline (the teacher):
held-out prompts (``held_out``), replayed through the gateway (``replay``), checked for
format (``checks``, ``schema``), judged pairwise (``judge``), summed up with confidence
intervals (``stats``) and reported (``report``); ``run`` ties them together."""
